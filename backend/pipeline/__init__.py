"""The job pipeline, engine-independent: focus crop, hand-off to an engine, paste-back.

Change the crop or the upsampling in ``focus.py``, the blend in ``pasteback.py``, the order of
stages in ``refine.py``. Pixel format conversions at the protocol edge are in ``imaging.py``.
"""
