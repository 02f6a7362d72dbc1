"""The interactive dialog: GIMP's generated procedure dialog plus a preset list from the backend.

GIMP builds widgets for every argument; the preset argument is a free string because the
backend decides which engines and presets exist (and that can change without re-registering
the plug-in), so its plain entry is replaced by a combo box listing what the backend offers --
or a fallback list with a line saying the backend is not running.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, cast

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GObject, Gtk  # noqa: E402

if TYPE_CHECKING:
    import touchup_transport

#: Arguments shown by the generated dialog, in this order (the preset row is inserted after
#: the reference chooser).
FIELDS_BEFORE = ["instruction", "reference"]
FIELDS_AFTER = [
    "variants",
    "strength",
    "steps",
    "seed",
    "context",
    "feather",
    "source",
    "endpoint",
    "connection",
]


def _preset_row(config: Gimp.ProcedureConfig, presets: list[str]) -> Gtk.Box:
    """A labelled combo (with entry) bound both ways to the config's ``preset`` string."""
    combo = Gtk.ComboBoxText.new_with_entry()
    for name in presets:
        combo.append_text(name)
    entry = cast(Gtk.Entry, combo.get_child())  # a combo made "with entry" holds one
    entry.set_placeholder_text("backend default")
    config.bind_property(
        "preset", entry, "text", GObject.BindingFlags.BIDIRECTIONAL | GObject.BindingFlags.SYNC_CREATE
    )
    label = Gtk.Label.new_with_mnemonic("_Preset")
    label.set_mnemonic_widget(combo)
    label.set_xalign(0.0)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    row.pack_start(label, False, False, 0)
    row.pack_start(combo, True, True, 0)
    row.set_tooltip_text("engine/preset offered by the backend; empty uses the backend's default")
    row.show_all()
    return row


def _follow_preset_variants(config: Gimp.ProcedureConfig, offer: touchup_transport.Offer) -> None:
    """Keep the variants count at the chosen preset's default (1 classic, 4 diffusion) until the
    user sets another count: picking a preset then moves the count only while it still equals
    the previous preset's default. A count kept from the last run (Repeat, the dialog shown
    again) is left as it is; 0 (the preset's default) shows the number it stands for."""
    state = {"preset": config.get_property("preset") or ""}
    if not config.get_property("variants"):
        default = offer.default_variants(state["preset"])
        if default:
            config.set_property("variants", default)

    def changed(_config: Gimp.ProcedureConfig, _pspec: GObject.ParamSpec) -> None:
        preset = config.get_property("preset") or ""
        before, after = offer.default_variants(state["preset"]), offer.default_variants(preset)
        state["preset"] = preset
        if after and config.get_property("variants") in (0, before):
            config.set_property("variants", after)

    config.connect("notify::preset", changed)


def _align_labels(dialog: GimpUi.ProcedureDialog, row: Gtk.Box, labelled: list[str]) -> None:
    """Give the preset row's label the width of GIMP's own labels, so the columns line up."""
    labels = Gtk.SizeGroup.new(Gtk.SizeGroupMode.HORIZONTAL)
    labels.add_widget(row.get_children()[0])
    for name in labelled:
        widget = dialog.get_widget(name, GObject.TYPE_NONE)
        if isinstance(widget, GimpUi.Labeled):
            labels.add_widget(widget.get_label())
    dialog._touchup_labels = labels  # type: ignore[attr-defined]  # keep the size group alive as long as the dialog


def _show_reference_thumbnail(dialog: GimpUi.ProcedureDialog) -> None:
    """Make the reference chooser show the layer it holds.

    GIMP 3.0's drawable chooser draws its thumbnail only when a drawable is set, which for a
    reference passed in happens before the button has a size: the button then shows a blank
    preview beside its fixed "Browse..." text, as if nothing were chosen. Setting the same
    drawable again once the chooser is laid out draws it. GIMP 3.2 builds the same button as a
    ``GimpItemChooser`` (``get_item``/``set_item``), with the same behaviour.
    """
    chooser = dialog.get_widget("reference", GObject.TYPE_NONE)
    item_chooser = getattr(GimpUi, "ItemChooser", None)  # GIMP 3.2+
    if item_chooser is not None and isinstance(chooser, item_chooser):
        get, put = item_chooser.get_item, item_chooser.set_item
    elif isinstance(chooser, GimpUi.DrawableChooser):
        get, put = GimpUi.DrawableChooser.get_drawable, GimpUi.DrawableChooser.set_drawable
    else:
        return

    def redraw(widget: Gtk.Widget, _allocation: object) -> None:
        drawable = get(widget)
        if drawable is not None:
            put(widget, drawable)

    chooser.connect("size-allocate", redraw)


def run_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, transport: ModuleType) -> bool:
    """Show the dialog; True when the user pressed OK (the config then holds their values)."""
    GimpUi.init("touchup-refine")
    endpoint = config.get_property("endpoint")
    try:
        connection = transport.connection_from(config.get_property("connection"))
        offer = transport.fetch_offer(connection.endpoint if connection else endpoint, connection=connection)
    except transport.BackendError as exc:
        offer = transport.Offer(list(transport.FALLBACK_PRESETS), status=f"Touchup: {exc.message}")
    presets, status = offer.presets, offer.status
    _follow_preset_variants(config, offer)

    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Refine Selection")
    top = FIELDS_BEFORE
    if status:
        label = dialog.get_label("backend-status", status, False, False)
        label.set_line_wrap(True)
        label.set_max_width_chars(60)
        label.set_xalign(0.0)
        top = ["backend-status", *top]
    # The preset row goes at the end of the first group, right after the reference chooser.
    row = _preset_row(config, presets)
    dialog.fill_box("touchup-top", top).pack_start(row, False, False, 0)
    dialog.fill_box("touchup-bottom", FIELDS_AFTER)
    dialog.fill(["touchup-top", "touchup-bottom"])
    _align_labels(dialog, row, FIELDS_BEFORE + FIELDS_AFTER)
    _show_reference_thumbnail(dialog)
    try:
        return bool(dialog.run())
    finally:
        dialog.destroy()
