"""``jointsrseg serve``: the module panel in a web browser, on trame-slicer (real MRML, offscreen rendering).

The page offers the Slicer panel's choices (tasks, factor, SR direction, axis, model with its card,
segment-with, device, uncertainty and its method) and shows the outputs in three linked slice views
(axial, coronal, sagittal) rendered on the server by Slicer's own slice pipeline, streamed as images
(trame-rca).  Everything else is :class:`~JointSRSegModule.web_session.WebSession`: the module logic's
checks and defaults, the Slicer panel's worker process, the library's readers and writers.

Secure by default: binds to 127.0.0.1, uploads are size-limited and read by the library's reader,
only files listed under ``--data-dir`` can be opened, one run at a time, every error is one line on
the page.  Rendering is offscreen (OSMesa: ``apt-get install libosmesa6``) unless
``VTK_DEFAULT_OPENGL_WINDOW`` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")  # before the first render window

from trame.app import get_server  # noqa: E402
from trame.ui.vuetify3 import SinglePageWithDrawerLayout  # noqa: E402
from trame.widgets import html  # noqa: E402
from trame.widgets import vuetify3 as v  # noqa: E402
from trame_slicer.core import LayoutManager, SlicerApp  # noqa: E402
from trame_slicer.rca_view import register_rca_factories  # noqa: E402
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition  # noqa: E402

from JointSRSegLib.errors import CancelledError, InputError  # noqa: E402
from JointSRSegLib.vocabulary import (  # noqa: E402
    AUTO,
    OUTPUT_FORMATS,
    SCALE_FACTORS,
    TASK_TEXT,
    TASKS,
    UNCERTAINTY_METHOD_TEXT,
    UNCERTAINTY_METHODS,
)

from . import checks, nodes  # noqa: E402
from .logic import SR_DIRECTIONS  # noqa: E402
from .web_session import DEFAULT_MAX_UPLOAD_MB, WebSession, first_line  # noqa: E402

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
LAYOUT_ID = "axial-coronal-sagittal"
POLL_S = 0.1
AXIS_CHOICES = (AUTO, "I", "J", "K")  # the Slicer panel's axis menu: auto or a voxel axis


def _slider_only(server, view_id, view) -> None:
    """Each view's gutter: its slice slider (no 3D button, there is no 3D view)."""
    from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state
    from trame_slicer.app.ui import Slider

    with html.Div(style="position: absolute; bottom: 0; left: 0; width: 100%;"):
        Slider(typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", dense=True)


class WebPanel:
    """The page and its handlers; one :class:`WebSession` per server process (one run at a time)."""

    def __init__(self, server=None, data_dir: str | Path | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 encoder: str | None = None):
        self.server = server or get_server(client_type="vue3")
        self.state, self.ctrl = self.server.state, self.server.controller
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, self.server, slice_view_ui_f=_slider_only,
                               rca_encoder=encoder)
        self.layouts = LayoutManager(self.app.scene, self.app.view_manager, self.server)
        views = [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(),
                 ViewLayoutDefinition.sagittal_view()]
        self.layouts.register_layout(LAYOUT_ID, Layout(LayoutDirection.Horizontal, views))
        self.layouts.set_layout(LAYOUT_ID)
        self.session = WebSession(self.app.scene, data_dir, max_upload_mb)
        self._syncing = False
        self._model_is_default, self._seg_is_default = True, True
        # What the server itself last put in the menus: a change to anything else is the user's.
        self._server_model, self._server_seg = "", checks.SEG_MODEL_NONE
        self._initial_state()
        self._bind()
        self._build_ui()
        self._link_views()

    # ------------------------------------------------------------------ state

    def _initial_state(self) -> None:
        s = self.state
        s.trame__title = "JointSRSeg"
        s.update({
            "data_files": self.session.data.files(), "data_file": None, "input_text": "", "max_upload_bytes":
            self.session.max_upload_bytes, "task_sr": True, "task_interp": False, "task_seg": False,
            "scale": 4, "scale_items": list(SCALE_FACTORS), "sr_direction": next(iter(SR_DIRECTIONS)),
            "direction_items": list(SR_DIRECTIONS), "axis": AUTO, "axis_items": list(AXIS_CHOICES),
            "model_items": [{"title": m.menu_text(), "value": m.id} for m in self.session.models.values()],
            "model_id": "", "model_card": "", "seg_model": checks.SEG_MODEL_NONE,
            "seg_items": list(checks.SEG_MODELS), "device": AUTO, "device_items": list(checks.DEVICES),
            "device_text": "", "uncertainty": False, "uncertainty_possible": False,
            "uncertainty_method": AUTO, "method_items": [
                {"title": f"{name}: {text}", "value": name} for name, text in UNCERTAINTY_METHOD_TEXT.items()
                if name in UNCERTAINTY_METHODS],
            "opacity": 0.5, "running": False, "progress": 0, "stage": "", "status": "", "error": "",
            "warnings": "", "downloads": [], "out_format": OUTPUT_FORMATS[0], "format_items": list(OUTPUT_FORMATS),
            "legend": None, "segments": [], "task_items": [{"key": t, "text": TASK_TEXT[t]} for t in TASKS],
        })
        self._on_request_changed()

    def _bind(self) -> None:
        s = self.state
        s.change("task_sr", "task_interp", "task_seg", "sr_direction", "scale", "seg_model")(self._on_request_changed)
        s.change("model_id")(self._on_model_picked)
        s.change("device")(lambda **_: self._show_device())
        s.change("opacity")(lambda opacity, **_: self._set_opacity(opacity))
        s.change("out_format")(lambda **_: self._show_downloads())
        self.ctrl.trigger("load_sample")(self._guarded(self.load_sample))
        self.ctrl.trigger("load_data_file")(self._guarded(self.load_data_file))
        self.ctrl.trigger("upload")(self._guarded(self.upload))
        self.ctrl.trigger("run")(self._guarded(self.start_run))
        self.ctrl.trigger("cancel")(self._guarded(self.cancel))
        self.ctrl.trigger("download")(self.download)
        self.ctrl.trigger("client_error")(self.client_error)

    def _guarded(self, handler):
        """Every error ends as one line on the page (and a traceback in the server log when it is not ours)."""

        def run(*args, **kwargs):
            self.state.error = ""
            try:
                return handler(*args, **kwargs)
            except InputError as error:
                self.state.error = first_line(error)
            except Exception as error:
                traceback.print_exc()
                self.state.error = first_line(error)
            return None

        return run

    def tasks(self) -> tuple[str, ...]:
        s = self.state
        return tuple(t for t in TASKS if s[f"task_{t}"])

    def _request(self) -> tuple[tuple[str, ...], str, int]:
        tasks = self.tasks()
        return tasks, self.session.logic.requestProtocol(tasks, self.state.sr_direction), int(self.state.scale)

    def _on_request_changed(self, **_) -> None:
        """Tasks, direction, factor or segment-with changed: the default model for them (logic.modelForRequest)."""
        if self._syncing:
            return
        s, logic = self.state, self.session.logic
        if s.seg_model != self._server_seg:  # the user set "Segment SR output with": it stays
            self._seg_is_default = False
        tasks, protocol, scale = self._request()
        if not tasks:
            self._show_model(s.model_id, None)
            return
        models = logic.modelsWithSegmentation(self.session.models, s.seg_model)
        model, choice = logic.modelForRequest(models, s.model_id, self._model_is_default, tasks, protocol, scale,
                                              self._seg_is_default)
        self._model_is_default = choice is not None
        self._syncing = True
        try:
            if self._model_is_default and self._seg_is_default:
                self._server_seg = s.seg_model = choice.seg_model or checks.SEG_MODEL_NONE
            self._server_model = s.model_id = model
        finally:
            self._syncing = False
        self._show_model(model, choice if self._model_is_default else None)

    def _on_model_picked(self, model_id, **_) -> None:
        """The user picked a model: it stays; the tasks, direction and factor adapt (logic.requestForModel)."""
        if self._syncing or model_id == self._server_model or model_id not in self.session.models:
            return
        self._server_model = model_id
        s, logic = self.state, self.session.logic
        effective = logic.modelsWithSegmentation({model_id: self.session.models[model_id]}, s.seg_model)[model_id]
        tasks, direction, scale = logic.requestForModel(effective, self.tasks(), s.sr_direction, int(s.scale))
        self._syncing = True
        try:
            for t in TASKS:
                s[f"task_{t}"] = t in tasks
            s.sr_direction, s.scale = direction, scale
        finally:
            self._syncing = False
        self._model_is_default = False
        self._show_model(model_id, None)

    def _show_model(self, model_id: str, choice) -> None:
        model = self.session.models.get(model_id)
        if model is None:
            return
        effective = self.session.logic.modelsWithSegmentation({model.id: model}, self.state.seg_model)[model.id]
        self.state.model_card = self.session.logic.modelInfoText(model, choice)
        self.state.uncertainty_possible = bool(effective.uncertainty_methods or effective.uncertainty)
        if not self.state.uncertainty_possible:
            self.state.uncertainty = False
        self._show_device()

    def _show_device(self) -> None:
        model = self.session.models.get(self.state.model_id)
        if model is not None:
            try:
                self.state.device_text = "Device: " + self.session.logic.describeDevice(self.state.device, model)
            except InputError as error:
                self.state.device_text = first_line(error)

    # ------------------------------------------------------------------ loading

    def load_sample(self) -> None:
        self._show_input(self.session.load_sample())

    def load_data_file(self, name: str) -> None:
        self._show_input(self.session.load_data_file(name))

    def upload(self, file: dict[str, Any]) -> None:
        """One file from the page (trame sends its name and bytes); the session checks and reads it."""
        if not isinstance(file, dict) or file.get("error"):
            raise InputError(None, f"the file could not be received ({(file or {}).get('error', 'no file')})")
        self._show_input(self.session.load_upload(str(file.get("name", "")), bytes(file.get("content") or b"")))

    def client_error(self, message: str) -> None:
        """A check the page did before sending (e.g. the upload size)."""
        self.state.error = str(message).splitlines()[0] if message else ""

    def _show_input(self, node) -> None:
        s = self.state
        s.input_text, s.status, s.downloads, s.legend, s.segments = self.session.input_summary(), "", [], None, []
        self.app.display_manager.show_volume_in_slice_background(node)
        self.app.display_manager.show_volume_in_slice_foreground(None)
        self.app.display_manager.reset_views()

    def _set_opacity(self, opacity: float) -> None:
        """The module logic's live opacity change (all composite nodes), then a new frame for each view."""
        self.session.logic.setOverlayOpacity(float(opacity))
        for view in self.app.view_manager.get_slice_views():
            view.schedule_render()

    def _link_views(self) -> None:
        """Linked views: a change of layers or opacity in one view reaches the other two (Slicer's link)."""
        for composite in nodes._nodes_of_class(self.app.scene, "vtkMRMLSliceCompositeNode"):
            composite.SetLinkedControl(True)

    # ------------------------------------------------------------------ running

    def start_run(self) -> None:
        s = self.state
        axis = AUTO if s.axis == AUTO else "IJK".index(s.axis)
        request = self.session.start(
            s.model_id, self.tasks(), int(s.scale), s.sr_direction, axis=axis, device=s.device,
            uncertainty=bool(s.uncertainty), uncertainty_method=s.uncertainty_method, seg_model=s.seg_model,
            opacity=float(s.opacity),
        )
        s.warnings = "\n".join(request.warnings)
        s.running, s.progress, s.stage, s.status = True, 0, "starting", ""
        asyncio.ensure_future(self._watch())

    def cancel(self) -> None:
        if self.session.cancel():
            self.state.status = "Cancelling…"

    async def _watch(self) -> None:
        run = self.session.run
        while run is not None and not run.done:
            with self.state:
                self.state.progress = round(100 * run.fraction)
                self.state.stage = run.stage
            await asyncio.sleep(POLL_S)
        with self.state:
            self._finish()

    def _finish(self) -> None:
        s = self.state
        s.running = False
        try:
            outputs = self.session.finish()
        except CancelledError:
            s.status, s.progress = "Cancelled; nothing was changed.", 0
            return
        except InputError as error:
            s.error, s.progress = first_line(error), 0
            return
        except Exception as error:
            traceback.print_exc()
            s.error, s.progress = first_line(error), 0
            return
        for node in outputs.values():  # the segmentation's outline and fill show in every view
            node.CreateDefaultDisplayNodes()
        self.app.display_manager.reset_views()
        self._set_opacity(float(s.opacity))
        seconds = next(iter(outputs.values())).GetAttribute("JointSRSeg.runTimeSeconds") if outputs else "?"
        s.progress, s.stage = 100, "done"
        s.status = f"Done in {seconds} s: {', '.join(n.GetName() for n in outputs.values())}"
        legend = self.session.legend()
        s.legend, s.segments = legend["uncertainty"], legend["segments"]
        self._show_downloads()

    def _show_downloads(self) -> None:
        self.state.downloads = [
            {"key": d.key, "file": d.file} for d in self.session.downloads(self.state.out_format)
        ]

    def download(self, key: str, fmt: str):
        """The bytes of one output for ``utils.download`` (an attachment: no path ever reaches the page)."""
        try:
            return self.server.protocol.addAttachment(self.session.download_bytes(key, fmt))
        except Exception as error:
            if not isinstance(error, InputError):
                traceback.print_exc()
            self.state.error = first_line(error)
            self.state.flush()
            return None

    # ------------------------------------------------------------------ page

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, theme="dark") as layout:
            layout.title.set_text("JointSRSeg — super-resolution, interpolation, segmentation")
            layout.drawer.width = 400
            with layout.drawer:
                self._panel()
            with layout.content:
                with html.Div(style="display: flex; flex-direction: column; height: 100%;"):
                    with html.Div(id="views", style="flex: 1 1 auto; min-height: 0; position: relative;"):
                        self.layouts.initialize_layout_grid(layout)
                    self._legend()
        self.ui = layout

    def _panel(self) -> None:
        with html.Div(classes="pa-3", style="font-size: 14px;"):
            html.Div("{{ error }}", id="error", v_show="error", classes="text-red-lighten-2 mb-2",
                     style="white-space: nowrap; overflow: hidden; text-overflow: ellipsis;", title=("error",))
            html.Div("Input", classes="text-subtitle-2")
            with html.Div(classes="d-flex align-center ga-2 mb-1"):
                v.VBtn("Load sample", id="load-sample", size="small", click=self.ctrl.trigger_fn("load_sample"),
                       disabled=("running",))
                html.Input(id="upload", type="file", disabled=("running",), style="max-width: 220px;",
                           change=(
                               "const f = $event.target.files[0]; if (!f) { return; }"
                               "if (f.size > max_upload_bytes) { trigger('client_error', [f.name + ': is '"
                               " + Math.round(f.size / 1048576) + ' MB; uploads are limited to '"
                               " + Math.round(max_upload_bytes / 1048576) + ' MB (--max-upload-mb)']); }"
                               "else { trigger('upload', [f]); }"
                               "$event.target.value = '';"
                           ))
            with html.Div(v_if="data_files.length", classes="d-flex align-center ga-2 mb-1"):
                with html.Select(id="data-file", v_model=("data_file",), style="flex: 1;", classes="jss-select"):
                    html.Option("{{ f }}", v_for="f in data_files", key="f", value=("f",))
                v.VBtn("Open", id="open-data-file", size="small", disabled=("!data_file || running",),
                       click="trigger('load_data_file', [data_file])")
            html.Div("{{ input_text }}", id="input-text", classes="text-caption mb-2")
            self._request_controls()
            self._run_controls()
        html.Style(".jss-select { background: #333; color: #eee; padding: 2px 4px; border-radius: 3px; }")

    def _request_controls(self) -> None:
        """The Slicer panel's choices: tasks, factor, direction, axis, model and card, segment-with, device."""
        html.Div("Tasks", classes="text-subtitle-2")
        with html.Div(classes="d-flex ga-3"):
            for task in TASKS:
                with html.Label():
                    html.Input(type="checkbox", id=f"task-{task}", v_model=(f"task_{task}",))
                    html.Span(f" {TASK_TEXT[task]}")
        self._select("Factor", "scale", "scale_items", number=True)
        self._select("SR direction", "sr_direction", "direction_items")
        self._select("Axis", "axis", "axis_items")
        with html.Div(classes="my-1"):
            html.Div("Model", classes="text-subtitle-2")
            with html.Select(id="model", v_model=("model_id",), classes="jss-select", style="width: 100%;"):
                html.Option("{{ m.title }}", v_for="m in model_items", key="m.value", value=("m.value",))
            html.Pre("{{ model_card }}", id="model-card", classes="text-caption",
                     style="white-space: pre-wrap; max-height: 150px; overflow-y: auto; opacity: 0.8;")
        self._select("Segment SR output with", "seg_model", "seg_items")
        self._select("Device", "device", "device_items")
        html.Div("{{ device_text }}", id="device-text", classes="text-caption")
        with html.Div(classes="my-1"):
            with html.Label(style=("uncertainty_possible ? '' : 'opacity: 0.5'",)):
                html.Input(type="checkbox", id="uncertainty", v_model=("uncertainty",),
                           disabled=("!uncertainty_possible",))
                html.Span(" Uncertainty map, method ")
            with html.Select(id="uncertainty-method", v_model=("uncertainty_method",), classes="jss-select",
                             disabled=("!uncertainty",)):
                html.Option("{{ m.value }}", v_for="m in method_items", key="m.value", value=("m.value",),
                            title=("m.title",))

    def _run_controls(self) -> None:
        """Run / Cancel, progress, status, warnings, opacity and the downloads."""
        with html.Div(classes="d-flex align-center ga-2 my-2"):
            v.VBtn("Run", id="run", color="primary", click=self.ctrl.trigger_fn("run"),
                   disabled=("running || !input_text",))
            v.VBtn("Cancel", id="cancel", click=self.ctrl.trigger_fn("cancel"), disabled=("!running",))
        v.VProgressLinear(id="progress", model_value=("progress",), v_show="running", height=14, color="primary",
                          children=["{{ progress }} % {{ stage }}"])
        html.Div("{{ status }}", id="status", classes="text-caption my-1")
        html.Pre("{{ warnings }}", v_show="warnings", classes="text-caption text-amber",
                 style="white-space: pre-wrap;")
        with html.Div(classes="d-flex align-center ga-2 my-1"):
            html.Span("Overlay opacity")
            html.Input(id="opacity", type="range", min=0, max=1, step=0.05, v_model_number=("opacity",))
            html.Span("{{ opacity.toFixed(2) }}")
        with html.Div(v_if="downloads.length", classes="my-2"):
            html.Div("Downloads", classes="text-subtitle-2")
            self._select("Format", "out_format", "format_items")
            with html.Div(v_for="d in downloads", key="d.key"):
                v.VBtn("{{ d.file }}", classes="download text-none", variant="text", size="small",
                       color="blue-lighten-2", id=("'download-' + d.key",),
                       click=("utils.download(d.file, trigger('download', [d.key, out_format]),"
                              " 'application/octet-stream')"))

    def _select(self, label: str, name: str, items: str, number: bool = False) -> None:
        with html.Div(classes="d-flex align-center ga-2 my-1"):
            html.Span(label, style="min-width: 150px;")
            model = {"v_model_number": (name,)} if number else {"v_model": (name,)}
            with html.Select(id=name.replace("_", "-"), classes="jss-select", **model):
                html.Option("{{ i }}", v_for=f"i in {items}", key="i", value=("i",))

    def _legend(self) -> None:
        with html.Div(id="legend", classes="d-flex align-center ga-4 pa-2", style="flex: 0 0 auto;"):
            with html.Div(v_if="legend", style="min-width: 320px;"):
                html.Div("{{ legend.title }}", classes="text-caption")
                html.Div(style=("`height: 14px; background: linear-gradient(to right, ${legend.gradient});`",))
                with html.Div(classes="d-flex text-caption"):
                    html.Span("0")
                    v.VSpacer()
                    html.Span("0.5")
                    v.VSpacer()
                    html.Span("1")
                html.Div("{{ legend.unit }}", id="legend-unit", classes="text-caption")
            with html.Div(v_for="seg in segments", key="seg.name", classes="d-flex align-center ga-1 text-caption"):
                html.Span(style=("`display: inline-block; width: 12px; height: 12px; background: ${seg.color};`",))
                html.Span("{{ seg.name }}")

    def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        cap_websocket_messages(self.session.max_upload_bytes + MESSAGE_OVERHEAD_BYTES)
        argv, sys.argv = sys.argv, sys.argv[:1]  # trame reads its own options from sys.argv: give it none
        try:
            self.server.start(host=host, port=port, open_browser=False, show_connection_info=False)
        finally:
            sys.argv = argv


MESSAGE_OVERHEAD_BYTES = 1 << 20  # msgpack envelope and state keys around an uploaded file


def cap_websocket_messages(limit_bytes: int) -> None:
    """Refuse any websocket message larger than ``limit_bytes`` before its memory is allocated.

    wslink lets an authenticated client announce messages of up to 4 GB and allocates that much as soon
    as the first chunk arrives; the page checks an upload's size before sending it, but a client that
    skips the page must not be able to make the server hold more than the upload limit."""
    from wslink import chunking

    if getattr(chunking.UnChunker, "_jointsrseg_limit", None) is None:
        original = chunking.UnChunker.set_max_message_size

        def capped(self, size):
            original(self, min(int(size), chunking.UnChunker._jointsrseg_limit))

        chunking.UnChunker.set_max_message_size = capped
    chunking.UnChunker._jointsrseg_limit = int(limit_bytes)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, data_dir: str | Path | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> int:
    """Build the page and serve it until interrupted (the CLI's ``jointsrseg serve``)."""
    panel = WebPanel(data_dir=data_dir, max_upload_mb=max_upload_mb)
    print(f"JointSRSeg web panel: http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        panel.start(host, port)
    finally:
        panel.session.close()
    return 0


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "WebPanel", "cap_websocket_messages", "serve"]
