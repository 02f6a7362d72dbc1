#!/usr/bin/env python3
"""Touchup for GIMP 3: Filters > Touchup > Refine Selection…

Sends only the selection's context tile to the resident Touchup backend and puts the refined
region back as a new layer above the active one, as a single undo step. The backend does the
work; this plug-in reads pixels, shows progress and writes the result.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

# The installer puts touchup.shared (and pyzmq/msgpack when GIMP's Python lacks them) here.
_HERE = os.path.dirname(os.path.abspath(__file__))
_LIB = os.path.join(_HERE, "lib")
if os.path.isdir(_LIB) and _LIB not in sys.path:
    sys.path.insert(0, _LIB)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

PROC_NAME = "plug-in-touchup-refine-selection"
SOURCES = (("visible", "Visible image"), ("active", "Active layer"))
#: The most variants one request may ask for (the protocol's limit).
MAX_VARIANTS = 8


def _import_touchup() -> tuple[Any, Any, str | None]:
    """The plug-in's own modules, or a message saying the installation is incomplete.

    They need ``touchup.shared`` (and pyzmq/msgpack), which the installer puts into ``lib``;
    a missing piece must become a message in GIMP, not a silent crash of the plug-in.
    """
    try:
        import touchup_pixels
        import touchup_transport
    except ImportError as exc:
        return (
            None,
            None,
            (
                f"Touchup is not installed completely ({exc}). Reinstall the GIMP plug-in with the "
                "Touchup installer."
            ),
        )
    return touchup_pixels, touchup_transport, None


def _installed_config() -> dict:
    """``config.json`` written beside this script by ``touchup install`` (endpoint, backend command)."""
    try:
        with open(os.path.join(_HERE, "config.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _protocol_defaults() -> tuple[str, dict]:
    """(default endpoint, default refine params) of the protocol, so the dialog starts from the
    same values as Krita's docker and the backend.

    The procedure must register even when the installation is incomplete (pyzmq or msgpack
    missing), so that running it can say what is missing. GIMP keeps that registration until
    this script changes, so the fallback repeats the protocol's values.
    """
    try:
        from touchup.shared.client import DEFAULT_PARAMS
        from touchup.shared.protocol import DEFAULT_ENDPOINT
    except ImportError:
        return "tcp://127.0.0.1:57361", {"strength": 1.0, "seed": 0, "context": 64, "feather": 8}
    return DEFAULT_ENDPOINT, DEFAULT_PARAMS


def _default_endpoint() -> str:
    """TOUCHUP_ENDPOINT, else the endpoint the installer configured, else the protocol's default."""
    return (
        os.environ.get("TOUCHUP_ENDPOINT") or _installed_config().get("endpoint") or _protocol_defaults()[0]
    )


def _fail(procedure: Gimp.Procedure, message: str, show: bool = True) -> Gimp.ValueArray:
    """Tell the user (GIMP's message area or error console) and fail the call for scripts."""
    if show:
        Gimp.message(message)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def _restore_reference(image: Gimp.Image, config: Gimp.ProcedureConfig) -> None:
    """The last run's reference layer (by name) when none is given, for Repeat and Re-Show."""
    name = config.get_property("reference-name")
    if config.get_property("reference") is None and name:
        layer = image.get_layer_by_name(name)
        if layer is not None:
            config.set_property("reference", layer)


class TouchupRefine(Gimp.PlugIn):
    """The plug-in: one image procedure on the selected drawable(s)."""

    def do_query_procedures(self) -> list[str]:
        return [PROC_NAME]

    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(
            Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        )
        procedure.set_menu_label("_Refine Selection…")
        procedure.add_menu_path("<Image>/Filters/Touchup/")
        procedure.set_documentation(
            "Refine the selected region with Touchup",
            "Sends the selection and its surroundings to the Touchup backend (start it with "
            "`touchup serve`), optionally with a reference layer showing what the region should "
            "look like, and adds the refined region as a new layer above the active layer. "
            "Pixels outside the selection are left unchanged; one undo removes the layer.",
            name,
        )
        procedure.set_attribution("Touchup contributors", "Touchup contributors", "2025")

        rw = GObject.ParamFlags.READWRITE
        defaults = _protocol_defaults()[1]
        procedure.add_string_argument(
            "instruction", "_Instruction", "What the region should become (engines with prompts only)", "", rw
        )
        procedure.add_drawable_argument(
            "reference",
            "Refere_nce layer",
            "A layer showing the region as it should look (optional)",
            True,
            rw,
        )
        # GIMP cannot keep a drawable among a procedure's last values, so Repeat and the dialog
        # shown again would forget the reference; its name is kept instead (unique per image).
        procedure.add_string_aux_argument(
            "reference-name", "Reference layer name", "The last run's reference layer", "", rw
        )
        procedure.add_string_argument(
            "preset",
            "_Preset",
            "engine/preset as listed by the backend (for example classic/default); empty: the backend's default",
            "",
            rw,
        )
        procedure.add_double_argument(
            "strength",
            "Stren_gth",
            "How far to move from the original",
            0.0,
            1.0,
            float(defaults["strength"]),
            rw,
        )
        procedure.add_int_argument(
            "steps", "S_teps", "Sampling steps (0: the engine's default)", 0, 500, 0, rw
        )
        procedure.add_int_argument(
            "seed", "S_eed", "Random seed, for repeatable results", 0, 2**31 - 1, int(defaults["seed"]), rw
        )
        procedure.add_int_argument(
            "variants",
            "_Variants",
            "How many results to make, with consecutive seeds from the seed on; several go into one "
            "layer group (0: the preset's default)",
            0,
            MAX_VARIANTS,
            0,
            rw,
        )
        procedure.add_int_argument(
            "context",
            "Conte_xt margin",
            "Surrounding pixels sent with the selection (at 1 megapixel)",
            0,
            1024,
            int(defaults["context"]),
            rw,
        )
        procedure.add_int_argument(
            "feather",
            "_Feather",
            "Width of the blend at the selection edge, px",
            0,
            256,
            int(defaults["feather"]),
            rw,
        )
        sources = Gimp.Choice.new()
        for i, (nick, label) in enumerate(SOURCES):
            sources.add(nick, i, label, "")
        procedure.add_choice_argument(
            "source", "So_urce", "Refine what is visible, or only the active layer", sources, "visible", rw
        )
        procedure.add_string_argument(
            "endpoint", "_Backend endpoint", "Where the Touchup backend listens", _default_endpoint(), rw
        )
        procedure.add_string_argument(
            "connection",
            "Co_nnection file",
            "A backend on another machine: the file from `touchup keys add` (overrides the endpoint)",
            os.environ.get("TOUCHUP_CONNECTION") or _installed_config().get("connection") or "",
            rw,
        )
        return procedure

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        procedure: Gimp.Procedure,
        run_mode: Gimp.RunMode,
        image: Gimp.Image,
        drawables: list[Gimp.Drawable],
        config: Gimp.ProcedureConfig,
        run_data: object,
    ) -> Gimp.ValueArray:
        try:
            return self._run(procedure, run_mode, image, drawables, config)
        except Exception as exc:  # a bug must become a message, not a "plug-in crashed" dialog
            traceback.print_exc()
            return _fail(
                procedure, f"Touchup failed unexpectedly: {exc!r}. Details are on the terminal GIMP runs in."
            )
        finally:
            Gimp.progress_end()

    def _run(
        self,
        procedure: Gimp.Procedure,
        run_mode: Gimp.RunMode,
        image: Gimp.Image,
        drawables: list[Gimp.Drawable],
        config: Gimp.ProcedureConfig,
    ) -> Gimp.ValueArray:
        pixels, transport, problem = _import_touchup()
        if problem:
            return _fail(procedure, problem)
        interactive = run_mode == Gimp.RunMode.INTERACTIVE

        if not drawables:
            return _fail(procedure, "Touchup: select a layer first.")
        if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
            return _fail(
                procedure, "Touchup works on RGB and grayscale images; convert this indexed image first."
            )

        if run_mode != Gimp.RunMode.NONINTERACTIVE:
            _restore_reference(image, config)
        if interactive:
            import touchup_dialog

            if not touchup_dialog.run_dialog(procedure, config, transport):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())

        endpoint = (config.get_property("endpoint") or "").strip() or _default_endpoint()
        instruction = config.get_property("instruction") or ""
        reference = config.get_property("reference")
        config.set_property("reference-name", reference.get_name() if reference is not None else "")
        source = config.get_property("source")
        engine, preset = transport.split_preset(config.get_property("preset") or "")
        params = {
            "strength": config.get_property("strength"),
            "steps": config.get_property("steps") or None,
            "seed": config.get_property("seed"),
            "variants": config.get_property("variants") or None,  # None: the preset's default
            "context": config.get_property("context"),
            "feather": config.get_property("feather"),
        }

        selection = pixels.selection_rect(image)
        if selection.empty:
            return _fail(procedure, "Touchup: nothing is selected. Select the region to refine first.")
        doc_w, doc_h = image.get_width(), image.get_height()
        tile = pixels.context_tile(selection, doc_w, doc_h, params["context"])
        active = drawables[0]

        Gimp.progress_init("Touchup: reading pixels…")
        fmt = pixels.pixel_format(image, active)
        if source == "active":
            src = pixels.read_rgba(active, tile, fmt, "source")
        else:
            src = pixels.read_visible(image, tile, fmt)
        mask = pixels.read_selection(image, tile, fmt)
        refs = [pixels.read_whole(reference, fmt, "reference")] if reference is not None else []

        header, frames = transport.refine_request(
            src,
            mask,
            origin=(tile.x, tile.y),
            doc_size=(doc_w, doc_h),
            references=refs,
            prompt=instruction,
            engine=engine,
            preset=preset,
            params=params,
            transfer=fmt.transfer,
        )

        def on_progress(event: Any) -> None:
            Gimp.progress_set_text(event.text)
            Gimp.progress_update(event.fraction)

        reference_name = reference.get_name() if reference is not None else None
        group = pixels.VariantGroup(
            image, active, transport.variants_group_name(instruction, reference_name), fmt
        )
        sent = transport.SentTile.of_request(header, frames)

        arrived: list[Any] = []  # touchup_pixels.Variant (the module is imported at run time)

        def variant_of(msg: Any) -> Any:
            # Checked against the tile sent (origin, size, channels, order, dtype) before any pixel is written.
            out, origin = transport.checked_result(msg, sent)
            index, _count = transport.variant_position(msg.header)
            return pixels.Variant(transport.variant_layer_name(msg.header), index, origin, out)

        def on_variant(msg: Any) -> None:
            """A finished variant (not the last): kept until the job ends, then inserted with
            the others in one short undo step (see :class:`pixels.VariantGroup`)."""
            arrived.append(variant_of(msg))

        Gimp.progress_set_text("Touchup: sending to the backend…")
        try:
            connection = transport.connection_from(config.get_property("connection"))
            if connection is not None:
                endpoint = connection.endpoint
            result = transport.run_refine(
                endpoint, header, frames, on_progress, connection=connection, on_variant=on_variant
            )
            last = variant_of(result)
        except transport.BackendError as exc:
            group.insert(arrived)  # what finished before the failure is kept, as one undo step
            Gimp.displays_flush()
            return _fail(procedure, transport.user_message(exc, endpoint, kept=len(arrived)))
        if last.frame.desc.dtype != fmt.dtype:
            return _fail(
                procedure, "Touchup: the backend sent a result this plug-in cannot use; update both."
            )
        if arrived:  # several variants: one group, one undo step
            Gimp.progress_set_text("Touchup: adding the variants…")
            group.insert([*arrived, last])
        else:  # one result: one layer, exactly as without variants
            Gimp.progress_set_text("Touchup: adding the layer…")
            pixels.add_result_layer(
                image,
                active,
                transport.result_layer_name(instruction, reference_name),
                last.origin,
                last.frame,
                fmt,
            )
        Gimp.progress_update(1.0)
        Gimp.displays_flush()

        meta = result.header.get("meta") or {}
        note = str(meta.get("reference") or "")
        if interactive and reference is not None and note.startswith("rejected"):
            Gimp.message(f"Touchup: the reference layer was not used ({note}).")
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


Gimp.main(TouchupRefine.__gtype__, sys.argv)
