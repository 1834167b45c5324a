"""Execution backends of the :class:`~anymask.Predictor`: PyTorch, or onnxruntime on exported graphs.

``backend`` names (``Predictor(model, backend=...)``, ``anymask segment --backend``):

- ``"torch"``: the networks in PyTorch, float32, exact;
- ``"onnx"``: the encoder and the decoder as ONNX graphs in onnxruntime, float32 (masks IoU >= 0.999 against
  ``"torch"``);
- ``"onnx-int8"``: as ``"onnx"`` with the encoder's weight MatMuls quantised to int8 (dynamic, per channel);
- ``"auto"`` (the default): the ``ANYMASK_BACKEND`` environment variable when set, else ``"onnx"`` when
  onnxruntime can be imported and the model is on the CPU, else ``"torch"``.

The graphs are exported on first use and cached under ``<anymask_home()>/onnx/<key>/``, the key being a hash of
the model's name, its weights, the anymask, torch and onnxruntime versions and the options; a cache folder is
written under a temporary name and renamed into place, so concurrent first uses never see a half-written one.
Encoders for images not padded to the square input (``Predictor(pad_to_square=False)``) are exported per
resized input shape on first use, into the same folder (``encoder_<h>x<w>.onnx``, written atomically).

The graphs of a model exactly as ``load_model(name)`` gives it (the catalogue's verified weights, unchanged, the
default build) are also recorded under that name (``<anymask_home()>/onnx/by-name/``), in a key that needs no
torch to compute: :func:`find_named_graphs` finds them again without importing torch, so that
:meth:`anymask.onnx_predictor.OnnxPredictor.from_pretrained` and ``anymask segment`` start in a fraction of the
time and memory once the graphs exist (``import torch`` alone is ~1.7 s and ~190 MB here).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__, weights
from .errors import ModelError

if TYPE_CHECKING:  # torch is imported only where a model is exported: OnnxRunner.from_folder runs without it
    from .modeling import Sam
    from .prompts import Prompts

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
#: environment variable that chooses the backend of ``backend="auto"``
BACKEND_ENV = "ANYMASK_BACKEND"

#: graph files of the runtime cache
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_low_res.onnx"  # with mask input
DECODER_NO_MASK_FILE = "decoder_low_res_no_mask.onnx"  # image side shared by the batch
#: prompts without mask input: the image side prepared once per image, then every prompt decoded with it
DECODER_PREPARE_FILE = "decoder_prepare.onnx"
DECODER_PREPARED_FILE = "decoder_low_res_prepared.onnx"
#: the prepared decoder with an ``upscale_grid`` input: the mask logits of the grid cells that cover the image only
#: (:meth:`OnnxRunner.decode` with ``grid``; the automatic mask generator on non-square images)
DECODER_CROPPED_FILE = "decoder_low_res_prepared_cropped.onnx"
#: the no-mask decoder with its mask upscaling in int8 (``decode(..., precision="int8")``), made on first use
DECODER_NO_MASK_INT8_FILE = "decoder_low_res_no_mask_int8_upscaling.onnx"
DECODER_PREPARED_INT8_FILE = "decoder_low_res_prepared_int8_upscaling.onnx"
#: decoder precisions of :meth:`OnnxRunner.decode`
DECODER_PRECISIONS = ("fp32", "int8")
#: part of the cache key: bump when the graphs change (2: decoders take any embedding grid; 3: the prepared
#: decoder; 4: the final attention for the output tokens only; 5: TinyViT's high-resolution parts in stripes;
#: 6: image-to-token softmax along the last axis, the prepared image side split into heads; 7: the mask upscaling in
#: four sub-pixel-row paths; 8: the cropped decoder). The key also holds a digest of the modules the graphs are
#: traced from (:data:`GRAPH_SOURCES`), so that an edit there re-exports them even without a bump.
GRAPHS_REVISION = "8"
#: the package's modules whose code the exported graphs are traced from
GRAPH_SOURCES = ("modeling", "export.py")
RUNTIME_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_NO_MASK_FILE, DECODER_PREPARE_FILE, DECODER_PREPARED_FILE,
                 DECODER_CROPPED_FILE)
#: the value of the mask logits that :meth:`OnnxRunner.decode` with ``grid`` (and ``Predictor.predict_low_res``
#: with ``image_only``) does not compute: far below any threshold, finite (a bilinear resize that gives it
#: weight 0 reads 0)
PADDING_LOGIT = -1.0e4
#: the decoder graphs a runner opened from a folder needs (``anymask export`` writes them, model.json lists them)
PREDICTOR_GRAPHS = {"decoder_prepare": DECODER_PREPARE_FILE, "decoder_prepared": DECODER_PREPARED_FILE,
                    "decoder_mask_input": DECODER_FILE}
#: prompts decoded at once by the predictors (:class:`~anymask.Predictor`, :class:`~anymask.onnx_predictor.
#: OnnxPredictor`). The decoder's activations are about 50 MB per prompt (MobileSAM, onnx: 16 boxes peaked 262 MB
#: above the session with 8, 98 with 2); each prompt's matrix products have 4096 rows or more already, so smaller
#: chunks cost no speed (16 boxes: 354 / 341 / 332 / 349 ms for chunks of 8 / 4 / 2 / 1; 64 points at low res,
#: 1149 / 1069 ms for 8 / 2)
DECODE_CHUNK = 2
#: unpadded encoder sessions an :class:`OnnxRunner` keeps open (one per input shape)
MAX_SHAPE_ENCODERS = 2


def onnxruntime_available() -> bool:
    """Whether onnxruntime (and onnx, needed to export) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, model: Sam) -> str:
    """The concrete backend (``"torch"``, ``"onnx"`` or ``"onnx-int8"``) for a requested one."""
    backend = backend or "auto"
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        usable = onnxruntime_available() and getattr(model, "spec", None) is not None
        return "onnx" if usable and model.device.type == "cpu" else "torch"
    if not onnxruntime_available():
        raise ModelError(f"backend {backend!r} needs the onnxruntime and onnx packages")
    if model.device.type != "cpu":
        raise ModelError(f"backend {backend!r} runs on the CPU; the model is on {model.device}")
    return backend


_SHARED_ARENA: list[bool] = []
#: the shared arena's first region, in bytes. onnxruntime's default starts the arena at 1 MB and doubles each new
#: region (1, 2, 4, ... 64 MB), and its allocator merges free blocks only within a region: the MobileSAM encoder's
#: run (about 70 MB live at its peak) left ~115 MB of the arena resident. A first region large enough for the whole
#: run serves it with less fragmentation (pages never used are never resident). See docs/speed.md, "Session 11".
ARENA_FIRST_REGION_BYTES = 128 << 20


def _register_shared_arena() -> bool:
    """Register (once per process) the onnxruntime CPU arena that every session of anymask's runners shares.

    With one arena per session, each session keeps its own high-water mark: after ``set_image`` the encoder's
    arena holds its activations (about 110 MB for MobileSAM at 1024 x 1024; ~85 MB since the arena starts with
    :data:`ARENA_FIRST_REGION_BYTES`) while the decoders grow theirs beside it (one click +43 MB). Shared, the
    decoders reuse the encoder's free blocks: a click adds nothing (measured: session peak 580 -> 538 MB with the
    CPU build of torch). Returns False where onnxruntime refuses (the sessions then keep their own arenas).
    """
    import onnxruntime as ort

    if not _SHARED_ARENA:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # max_mem (0: no limit), extend strategy (-1: default, next power of two), first region, max dead bytes
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, ARENA_FIRST_REGION_BYTES, -1))
            _SHARED_ARENA.append(True)
        except Exception as exc:  # noqa: BLE001 - any refusal: fall back to per-session arenas
            logger.warning("no shared onnxruntime arena: %s", exc)
            _SHARED_ARENA.append(False)
    return _SHARED_ARENA[0]


def onnx_prompt_arrays(prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as the decoder graphs take them: ``(B, N, 2)`` float coordinates in original pixels and ``(B, N)``
    float32 labels, box corners labelled 2 and 3 after any points, one padding point (label -1) without a box."""
    batch = prompts.batch_size
    coords, labels = [], []
    if prompts.points is not None:
        coords.append(prompts.points)
        labels.append(prompts.labels.astype(np.float32))
    if prompts.boxes is not None:
        coords.append(prompts.boxes.reshape(batch, 2, 2))
        labels.append(np.tile(np.array([[2.0, 3.0]], dtype=np.float32), (batch, 1)))
    else:
        coords.append(np.zeros((batch, 1, 2)))
        labels.append(-np.ones((batch, 1), dtype=np.float32))
    return np.concatenate(coords, axis=1), np.concatenate(labels, axis=1)


def weights_digest(model: Sam) -> str:
    """An identity of the model's weights, for the graph cache's key.

    ``checkpoint-<sha256>`` while they are exactly the catalogue's verified checkpoint file as
    :func:`anymask.load_model` mapped it (the same tensors, no page of the mapping written to: see
    :func:`anymask.checkpoint.mapped_unwritten`): no tensor is read. Otherwise the sha256 of the parameters and
    buffers (names, shapes and bytes), as hex; reading them all costs ~0.1 s and, for mapped tensors, puts the
    file's 40 MB (MobileSAM) in the process's resident memory.
    """
    if _checkpoint_unchanged(model):
        return "checkpoint-" + model.loaded_from["sha256"]
    return state_dict_digest(model.state_dict())


def _checkpoint_unchanged(model: Sam) -> bool:
    """Whether ``model``'s weights are still the checkpoint that :func:`anymask.load_model` mapped."""
    loaded = getattr(model, "loaded_from", None)
    if not isinstance(loaded, dict) or "layout" not in loaded:
        return False
    from .checkpoint import mapped_unwritten
    from .models import tensor_layout

    return tensor_layout(model) == loaded["layout"] and mapped_unwritten(loaded["checkpoint"],
                                                                         model.state_dict().values())


def state_dict_digest(state_dict: dict) -> str:
    """sha256 of a state dict's tensors (names, shapes and bytes, in name order), as hex."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def graph_build_options(model: Sam) -> list[str]:
    """The options of a model's build that change its traced graphs: the decoder's formulation (folded or plain
    cross-attention) and a TinyViT encoder's striping of its high-resolution parts."""
    return [str(getattr(model.mask_decoder.transformer, "formulation", "plain")),
            str(getattr(model.image_encoder, "stripe_rows", None))]


def graph_sources_digest(package: Path | None = None) -> str:
    """sha256 of the source files of :data:`GRAPH_SOURCES` (names and bytes) in ``package`` (default: anymask's
    own folder), as hex."""
    package = Path(package) if package is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in GRAPH_SOURCES:
        path = package / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def graphs_dir(model: Sam, quantize: str | None, opset: int, digest: str | None = None) -> Path:
    """The cache folder of ``model``'s runtime graphs for these options (may not exist yet); ``digest``: its
    :func:`weights_digest` when known."""
    import onnxruntime
    import torch

    parts = [model.spec.name, digest or weights_digest(model), __version__, torch.__version__,
             onnxruntime.__version__, str(quantize), str(opset), GRAPHS_REVISION, graph_sources_digest()]
    parts += graph_build_options(model)
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return weights.anymask_home() / "onnx" / f"{model.spec.name}-{quantize or 'fp32'}-{key}"


#: the folder (under ``<anymask_home()>/onnx``) of the records of :func:`find_named_graphs`
NAMED_GRAPHS_DIR = "by-name"
#: the description of the graphs that build_graphs writes beside them (as ``anymask export`` does): what
#: :class:`~anymask.onnx_predictor.OnnxPredictor` reads
MODEL_JSON = "model.json"


def _named_graphs_records(names: list[str], quantize: str | None) -> list[Path]:
    """Where the cache folder of ``load_model(name)``'s graphs is recorded, for each of ``names``. The key holds
    what the graphs depend on and can be known without importing torch: the name, the versions of anymask, torch
    (from its package metadata) and onnxruntime, the weights catalogue, the graph sources and revision, and
    ``quantize`` (all but the name read once for the list)."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort_version = "none"
    catalogue = importlib.resources.files("anymask").joinpath("catalog", "weights.json").read_bytes()
    shared = [__version__, torch_version, ort_version, hashlib.sha256(catalogue).hexdigest(), str(quantize),
              GRAPHS_REVISION, graph_sources_digest()]
    records = []
    for name in (str(n).strip().lower() for n in names):
        key = hashlib.sha256("|".join([name, *shared]).encode()).hexdigest()[:16]
        records.append(weights.anymask_home() / "onnx" / NAMED_GRAPHS_DIR / f"{name}-{quantize or 'fp32'}-{key}")
    return records


def find_named_graphs(name: str, quantize: str | None = None) -> Path | None:
    """The cache folder of the runtime graphs of ``load_model(name)`` (the catalogue's weights, the default
    build), if an earlier :func:`build_graphs` recorded it and it is complete; else None. Imports no torch.

    Args:
        name: a model name or alias, as given to :func:`anymask.load_model`.
        quantize: ``None`` (float32) or ``"int8"`` (the encoder's weight MatMuls).
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", str(name).strip().lower()):
        return None  # no model has such a name; and none reads a record outside the folder
    record = _named_graphs_records([name], quantize)[0]
    try:
        folder_name = record.read_text().strip()
    except OSError:
        return None
    folder = record.parent.parent / folder_name
    if not folder_name or Path(folder_name).name != folder_name:
        return None
    if not all((folder / file).is_file() for file in (*RUNTIME_FILES, MODEL_JSON)):
        return None
    return folder


def _record_named_graphs(model: Sam, folder: Path, quantize: str | None, opset: int, digest: str) -> None:
    """Record ``folder`` for :func:`find_named_graphs` under the model's names, when ``model`` is exactly what
    ``load_model(name)`` gives: loaded from the catalogue's verified checkpoint (``model.loaded_from``, set by
    :func:`anymask.load_model`), its tensors still those of the file, its build options unchanged, the default
    opset."""
    from .export import DEFAULT_OPSET
    from .fileio import atomic_write_text

    loaded = getattr(model, "loaded_from", None)
    if not isinstance(loaded, dict) or opset != DEFAULT_OPSET or loaded.get("build") != graph_build_options(model):
        return
    spec = model.spec
    records = _named_graphs_records([spec.name, *spec.aliases], quantize)
    if all(_read_text(record) == folder.name for record in records):
        return
    from .checkpoint import load_state_dict

    try:
        unchanged = digest == "checkpoint-" + loaded["sha256"] or state_dict_digest(
            load_state_dict(loaded["checkpoint"])) == digest
    except Exception as exc:  # noqa: BLE001 - the record is an optimisation: without it torch is imported
        logger.debug("not recording %s's graphs: %s", spec.name, exc)
        return
    if not unchanged:
        logger.debug("not recording %s's graphs: the weights differ from the checkpoint's", spec.name)
        return
    try:
        records[0].parent.mkdir(parents=True, exist_ok=True)
        for record in records:
            atomic_write_text(record, folder.name + "\n")
    except OSError as exc:  # a read-only cache: the graphs still run, found through the model
        logger.debug("not recording %s's graphs: %s", spec.name, exc)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def build_graphs(model: Sam, quantize: str | None = None, opset: int | None = None) -> Path:
    """Export (once) and return the folder holding the runtime graphs of ``model`` (and their ``model.json``, as
    ``anymask export`` writes it, so that :class:`~anymask.onnx_predictor.OnnxPredictor` can open the folder)."""
    from .export import DEFAULT_OPSET, describe
    from .fileio import atomic_write_text

    opset = opset or DEFAULT_OPSET
    digest = weights_digest(model)
    folder = graphs_dir(model, quantize, opset, digest)
    if not all((folder / name).is_file() for name in RUNTIME_FILES):
        _export_graphs(model, folder, quantize, opset)
    if not (folder / MODEL_JSON).is_file():
        try:
            atomic_write_text(folder / MODEL_JSON, json.dumps(describe(model, quantize, opset), indent=2) + "\n")
        except OSError as exc:  # a read-only cache of graphs from an earlier version: they run without it
            logger.debug("no %s in %s: %s", MODEL_JSON, folder, exc)
            return folder
    _record_named_graphs(model, folder, quantize, opset, digest)
    return folder


def _export_graphs(model: Sam, folder: Path, quantize: str | None, opset: int) -> None:
    """Export ``model``'s runtime graphs into ``folder`` (written under a temporary name, renamed into place)."""
    from .export import export_decoder, export_encoder, export_prepared_decoder, quantize_int8

    logger.info("exporting %s to ONNX (once; cached in %s)", model.spec.name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        export_encoder(model, tmp / ENCODER_FILE, opset=opset)
        if quantize == "int8":
            quantize_int8(tmp / ENCODER_FILE, tmp / ENCODER_FILE)
        export_decoder(model, tmp / DECODER_FILE, full_res=False, mask_input=True, opset=opset)
        export_decoder(model, tmp / DECODER_NO_MASK_FILE, full_res=False, mask_input=False, opset=opset)
        export_prepared_decoder(model, tmp / DECODER_PREPARE_FILE, tmp / DECODER_PREPARED_FILE, opset=opset,
                                cropped_path=tmp / DECODER_CROPPED_FILE)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first (the folder exists and is not empty)
            if not (folder / ENCODER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OnnxRunner:
    """The encoder and decoder graphs of one model in onnxruntime sessions.

    Args:
        model: the network (exported on first use, see :func:`build_graphs`).
        quantize: ``None`` (float32) or ``"int8"`` (the encoder's weight MatMuls).
        threads: intra-op threads; default ``torch.get_num_threads()``.

    :meth:`from_folder` opens graphs written by ``anymask export`` instead, without a model (and without torch).
    """

    def __init__(self, model: Sam, quantize: str | None = None, threads: int | None = None) -> None:
        import torch

        self._open(build_graphs(model, quantize), threads or torch.get_num_threads(), model, quantize)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, threads: int, graphs: dict[str, str] | None = None) -> "OnnxRunner":
        """A runner on graphs already written to ``folder`` (by ``anymask export``), without a model or torch.

        ``graphs`` maps the roles of :data:`PREDICTOR_GRAPHS` to file names in ``folder`` (default: those names).
        Such a runner has no model to export from: :meth:`encode` takes square-padded images only.
        """
        runner = cls.__new__(cls)
        runner._open(Path(folder), threads, None, None, graphs)
        return runner

    def _open(self, folder: Path, threads: int, model: Sam | None, quantize: str | None,
              graphs: dict[str, str] | None = None) -> None:
        import onnxruntime as ort

        graphs = {**PREDICTOR_GRAPHS, **(graphs or {})}
        shared_arena = _register_shared_arena()
        def options():
            settings = ort.SessionOptions()
            settings.intra_op_num_threads = threads
            settings.inter_op_num_threads = 1
            settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            settings.log_severity_level = 3
            settings.enable_mem_pattern = False  # one block for all activations, planned ahead: a higher peak
            # onnxruntime's arena, which keeps its high-water mark for the life of the session, holds less than
            # the C allocator does without it: freed activations stay in the process's heap there, fragmented.
            # Measured on the striped TinyViT encoder at 1024 x 1024: peak RSS of a run over the session's
            # baseline 108 MB with the arena, 290-395 MB without (and the same speed). Shrinking the arena after
            # each run hands its blocks back to the C allocator, which keeps them: +32 MB per run, so it is not
            # done. The decoders need the arena for speed too: without it every call maps and faults in fresh
            # pages for its 4 MB image-token arrays (one click: 46.6 -> 31.5 ms with the arena).
            settings.enable_cpu_mem_arena = True
            if shared_arena:
                settings.add_session_config_entry("session.use_env_allocators", "1")
            # The threads spin-wait for work while a run lasts (a decode hands them a few hundred small parallel
            # sections: waking a sleeping thread for each cost more than the work) and stop spinning when it
            # returns, leaving the cores to the upsampling and the caller's code. Measured on the decoders, one
            # process per setting, 2 threads, the 854 x 480 photo (ms): a click 16.2-17.1 (no spinning at all:
            # 17.1-17.5), a click 0.3 s after the last one, as in an interactive tool, 19.8-22.2 (no spinning:
            # 27.9-30.0), 16 boxes 249-262 (256-259); spinning that outlasts the run took the cores from the
            # upsampling that follows it (16 boxes 282-359 ms). The automatic generator at 2 threads: median
            # 4.7 s per photo without spinning, 5.0 s with it (ranges 4.55-6.42 and 4.66-6.21 s: within the noise).
            settings.add_session_config_entry("session.intra_op.allow_spinning", "1")
            settings.add_session_config_entry("session.force_spinning_stop", "1")
            return settings

        def session(name: str):
            return ort.InferenceSession(str(folder / name), options(), providers=["CPUExecutionProvider"])

        self._session, self._graphs = session, graphs
        self._model, self._quantize, self._folder = model, quantize, folder
        self.encoder = session(ENCODER_FILE)
        self.decoder_prepare = session(graphs["decoder_prepare"])
        # opened on first use (each holds a copy of the decoder's weights): prompts without and with a mask input,
        # decoding without a prepared image side, and the cropped decoder (the automatic mask generator's)
        self._decoder_prepared = self._decoder = self._decoder_no_mask = self._decoder_cropped = None
        self._shape_encoders: dict[tuple[int, int, int], object] = {}
        self._int8_decoders: dict[str, object] = {}

    @property
    def decoder_prepared(self):
        """The session of the decoder for prompts without mask input, given the prepared image side (opened on
        first use)."""
        if self._decoder_prepared is None:
            self._decoder_prepared = self._session(self._graphs["decoder_prepared"])
        return self._decoder_prepared

    @property
    def decoder_cropped(self):
        """:attr:`decoder_prepared` with an ``upscale_grid`` input (opened on first use); None when the folder
        has no such graph (one written by ``anymask export``)."""
        if self._decoder_cropped is None and (self._folder / DECODER_CROPPED_FILE).is_file():
            self._decoder_cropped = self._session(DECODER_CROPPED_FILE)
        return self._decoder_cropped

    @property
    def decoder(self):
        """The session of the decoder with mask input (opened on first use)."""
        if self._decoder is None:
            self._decoder = self._session(self._graphs["decoder_mask_input"])
        return self._decoder

    @property
    def decoder_no_mask(self):
        """The session of the decoder without mask input, image side shared by the batch (opened on first use)."""
        if self._decoder_no_mask is None:
            self._decoder_no_mask = self._session(DECODER_NO_MASK_FILE)
        return self._decoder_no_mask

    def prepare(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder's image side for prompts without a mask input, once per image: pass it to :meth:`decode`.

        Args:
            features: ``(1, C, gh, gw)`` image embedding.

        Returns:
            The prepared tensors by name (see :class:`~anymask.modeling.transformer.PreparedImage`), ~10 MB for
            a 64 x 64 grid.
        """
        outputs = self.decoder_prepare.run(None, {"image_embeddings": np.ascontiguousarray(features, dtype=np.float32)})
        # the graph's own output names (export.PREPARED_NAMES), read here without importing the exporter (torch)
        return dict(zip((output.name for output in self.decoder_prepare.get_outputs()), outputs))

    def encode(self, resized: np.ndarray, pad_to_square: bool = True, pad_multiple: int | None = None) -> np.ndarray:
        """Resized ``(h, w, 3)`` uint8 RGB (longer side = the model's input size) -> ``(1, C, 64, 64)``.

        With ``pad_to_square=False`` the image is padded only to a multiple of the encoder's stride:
        ``(1, C, ceil(h / 16), ceil(w / 16))`` for MobileSAM, by a graph exported for this shape on first use.
        """
        image = np.ascontiguousarray(resized, dtype=np.uint8)
        encoder = self.encoder if pad_to_square else self._shape_encoder(image.shape[0], image.shape[1],
                                                                         pad_multiple)
        return encoder.run(None, {"image": image})[0]

    def _shape_encoder(self, height: int, width: int, pad_multiple: int | None = None):
        """The onnxruntime session of the unpadded encoder for ``(height, width)`` inputs (exported once)."""
        key = (int(height), int(width), int(pad_multiple or 0))
        if self._model is None:
            raise ModelError("a runner opened from a folder encodes square-padded images only (no model to export "
                             "an encoder per shape)")
        encoder = self._shape_encoders.pop(key, None)
        if encoder is None:
            name = f"encoder_{key[0]}x{key[1]}" + (f"_pad{key[2]}" if key[2] else "") + ".onnx"
            path = self._folder / name
            if not path.is_file():
                from .export import export_encoder, quantize_int8

                logger.info("exporting the %s encoder for %dx%d inputs (once; cached in %s)", self._model.spec.name,
                            key[1], key[0], self._folder)
                tmp = Path(tempfile.mkdtemp(dir=self._folder, prefix=f".{name}."))
                try:
                    export_encoder(self._model, tmp / name, shape=key[:2], pad_multiple=pad_multiple)
                    if self._quantize == "int8":
                        quantize_int8(tmp / name, tmp / name)
                    os.replace(tmp / name, path)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            encoder = self._session(name)
        self._shape_encoders[key] = encoder  # most recently used last
        while len(self._shape_encoders) > MAX_SHAPE_ENCODERS:
            self._shape_encoders.pop(next(iter(self._shape_encoders)))
        return encoder

    def _int8_decoder(self, prepared: bool):
        """A no-mask decoder session (one-part, or taking the prepared image side) with the mask upscaling in
        int8 (the graph is written once, atomically)."""
        name, source = ((DECODER_PREPARED_INT8_FILE, DECODER_PREPARED_FILE) if prepared
                        else (DECODER_NO_MASK_INT8_FILE, DECODER_NO_MASK_FILE))
        if name not in self._int8_decoders:
            path = self._folder / name
            if not path.is_file():
                from .export import quantize_upscaling_int8

                quantize_upscaling_int8(self._folder / source, path)
            self._int8_decoders[name] = self._session(name)
        return self._int8_decoders[name]

    def decode(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask_input: np.ndarray | None,
               original_size: tuple[int, int], precision: str = "fp32",
               prepared: dict[str, np.ndarray] | None = None,
               grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All mask tokens of a batch of prompts: ``(B, 4, 256, 256)`` logits and ``(B, 4)`` IoU predictions.

        Args:
            features: ``(1, C, 64, 64)`` image embedding, or ``(1, C, gh, gw)`` (unpadded image: the logits
                are then ``(B, 4, 4 gh, 4 gw)``).
            coords: ``(B, N, 2)`` (x, y) pixels of the original image.
            labels: ``(B, N)``: 1 / 0 points, 2 / 3 box corners, -1 padding.
            mask_input: ``(B, 1, 256, 256)`` logits (``(B, 1, 4 gh, 4 gw)``) or None.
            original_size: ``(H, W)``.
            precision: ``"fp32"``, or ``"int8"``: the mask upscaling's matrix products in int8 (prompts without a
                mask input only; see :func:`anymask.export.quantize_upscaling_int8`), about 1.2x faster, masks
                not identical to float32's.
            prepared: :meth:`prepare` of ``features`` (used for prompts without a mask input: the same logits up
                to float32 rounding, fewer multiply-adds).
            grid: ``(rows, cols)``: compute the logits of the first ``rows x cols`` cells of the embedding grid
                only (4 x 4 logits each), the same values as the whole grid's there; the others are
                :data:`PADDING_LOGIT`. Used with ``prepared``, ``fp32`` and no mask input, when it is smaller than
                the grid (otherwise the whole grid is computed).
        """
        if precision not in DECODER_PRECISIONS:
            raise ModelError(f"unknown decoder precision {precision!r}: choose one of {', '.join(DECODER_PRECISIONS)}")
        feed = {
            "image_embeddings": np.ascontiguousarray(features, dtype=np.float32),
            "point_coords": np.ascontiguousarray(coords, dtype=np.float32),
            "point_labels": np.ascontiguousarray(labels, dtype=np.float32),
            "orig_im_size": np.asarray(original_size, dtype=np.int64),
        }
        grid_h, grid_w = features.shape[-2:]
        cropped = (grid is not None and mask_input is None and prepared is not None and precision == "fp32"
                   and (grid[0] < grid_h or grid[1] < grid_w) and self.decoder_cropped is not None)
        if cropped:
            rows, cols = min(int(grid[0]), grid_h), min(int(grid[1]), grid_w)
            part, iou = self.decoder_cropped.run(None, {**feed, **prepared,
                                                        "upscale_grid": np.array([rows, cols], dtype=np.int64)})
            cell_h, cell_w = part.shape[2] // rows, part.shape[3] // cols
            low_res = np.full((*part.shape[:2], cell_h * grid_h, cell_w * grid_w), PADDING_LOGIT, dtype=np.float32)
            low_res[:, :, : part.shape[2], : part.shape[3]] = part
        elif mask_input is None and prepared is not None:
            decoder = self._int8_decoder(prepared=True) if precision == "int8" else self.decoder_prepared
            low_res, iou = decoder.run(None, {**feed, **prepared})
        elif mask_input is None:
            decoder = self._int8_decoder(prepared=False) if precision == "int8" else self.decoder_no_mask
            low_res, iou = decoder.run(None, feed)
        else:
            feed["mask_input"] = np.ascontiguousarray(mask_input, dtype=np.float32)
            feed["has_mask_input"] = np.ones(len(coords), dtype=np.float32)
            low_res, iou = self.decoder.run(None, feed)
        return low_res, iou


__all__ = ["BACKENDS", "DECODER_PRECISIONS", "PADDING_LOGIT", "OnnxRunner", "build_graphs", "find_named_graphs",
           "graph_build_options", "graph_sources_digest", "graphs_dir", "onnxruntime_available", "resolve_backend",
           "state_dict_digest", "weights_digest"]
