"""How a graph model is made, and how far making it moved the model: tensorflowjs's converter
on a Keras model or a SavedModel signature (one line when it fails: the first node whose op
tfjs lacks), a converted model.json copied as it is, and the conversion check, the original
model's own outputs against the converted graph's (graph_model.py is the kind itself)."""
import contextlib
import shutil
from pathlib import Path

import numpy as np

from .. import KitError
from ..files import write_error
from ..model import held_stderr
from ..model_json import read_model_json
from .graph_exec import split_tensor


FOLD_VERSION = "4.22.0"  # the tensorflowjs whose fold_batch_norms graph_fold.py copies


@contextlib.contextmanager
def _fast_fold():
    """The converter with graph_fold's fold_batch_norms in its own's place: the same graph,
    bit for bit, without scaling each convolution weight in a Python loop (46 of ResNet50's
    56 s in step 1). Another tensorflowjs keeps its own."""
    import tensorflowjs
    from tensorflowjs.converters import fold_batch_norms as theirs
    if tensorflowjs.__version__ != FOLD_VERSION:
        yield
        return
    from . import graph_fold
    original = theirs.fold_batch_norms
    theirs.fold_batch_norms = graph_fold.fold_batch_norms
    try:
        yield
    finally:
        theirs.fold_batch_norms = original


def convert_keras(model, keras, model_dir):
    """A Keras model (tf-keras or Keras 3) converted to a tfjs graph model in `model_dir`."""
    import tempfile
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    with held_stderr(), _fast_fold():
        try:
            if keras.__name__.startswith("tf_keras"):
                v2.convert_keras_model_to_graph_model(model, str(model_dir))
                return
            with tempfile.TemporaryDirectory() as exported:  # Keras 3: its own SavedModel export
                model.export(exported, verbose=False)
                v2.convert_tf_saved_model(exported, str(model_dir), signature_def="serving_default")
        except ValueError as error:
            raise _conversion_error(error) from None


def convert_saved_model(path, signature, model_dir):
    """A SavedModel's `signature` converted to a tfjs graph model in `model_dir`; KitError
    naming the signatures there are when it has no such one."""
    import tensorflow as tf
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    with held_stderr():
        try:
            loaded = tf.saved_model.load(str(path))
            names = sorted(loaded.signatures.keys())
        except Exception as error:  # TensorFlow raises many kinds for a folder that is not a SavedModel
            raise KitError(f"--model {path}: cannot load it as a SavedModel ({' '.join(str(error).split())[:300]})") \
                from None
        if signature not in names:
            raise KitError(f"--model {path}: no signature {signature!r}; it has "
                           f"{', '.join(names) if names else 'none (save it with signatures=...)'}: choose one "
                           "with --signature")
        concrete = loaded.signatures[signature]
        for name, spec in concrete.structured_input_signature[1].items():
            if spec.dtype not in (tf.float32, tf.int32, tf.int64):
                raise KitError(f"--model {path}: signature {signature!r} takes input {name!r} of type "
                               f"{spec.dtype.name}; the kit feeds float32 and integer inputs only")
        try:
            with _fast_fold():
                v2.convert_tf_saved_model(str(path), str(model_dir), signature_def=signature)
        except ValueError as error:
            raise _conversion_error(error, concrete.graph.as_graph_def()) from None
    return concrete


def _conversion_error(error, graph_def=None):
    """One line for the converter's ValueError: for ops tfjs lacks, the first node using one
    (found in `graph_def`, the function that was converted, when given)."""
    text = " ".join(str(error).split())
    if "Unsupported Ops" not in text:
        return KitError(f"the tfjs converter fails on the model ({text[:300]})")
    ops = [op.strip() for op in text.split("optimization", 1)[-1].split(",") if op.strip()]
    nodes = [] if graph_def is None else \
        list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    node = next((n for n in nodes if n.op in ops), None)
    where = f"node {node.name!r} is op {node.op}" if node else f"op(s) {', '.join(ops)[:200]}"
    return KitError(f"the model cannot run in tfjs: {where}, which tfjs 4.22 has no kernel for (the converter's "
                    "op check)")


def copy_converted(model_json, model_dir):
    """A bare model.json and its weight files (checked: read_graph_model) copied into `model_dir`."""
    model_json = Path(model_json)
    document = read_model_json(model_json)
    model_dir.mkdir()
    try:
        shutil.copyfile(model_json, model_dir / "model.json")
        for group in document["weightsManifest"]:
            for name in group["paths"]:
                shutil.copyfile(model_json.parent / name, model_dir / name)
    except OSError as error:
        raise write_error(model_dir, error) from None


def conversion_check(graph, probe, feed, original):
    """How far the converter's optimizations (grappler's fusions, folded batch norms) moved the
    model's outputs: the original model's own float32 outputs in TF Python (`original`: a
    SavedModel signature's {output key: array}, or a Keras model's [arrays] in its order)
    against the converted graph's on the same inputs. Judged against the ceiling a node
    without an error model gets (numerics.CEILING of the outputs' magnitude): reordered float32
    arithmetic stays far below it; a conversion that computes something else does not."""
    from ..numerics import CEILING
    keys = list((graph.signature.get("outputs") or {}))
    converted = dict(zip(keys, probe.shipped(feed)))
    if isinstance(original, dict):
        pairs = [(key, original[key], converted[key]) for key in keys if key in original]
    else:  # a Keras model's outputs are Identity, Identity_1, ... (Keras 3's output_0, output_1, ...)
        def index(key):  # in the model.json in no particular order: by their number
            name = split_tensor(key)[0]
            number = name.rpartition("_")[2]
            return int(number) if "_" in name and number.isdigit() else 0
        pairs = [(key, a, converted[key]) for key, a in zip(sorted(keys, key=index), original)]
    if not pairs or len(pairs) != len(keys):
        return {"verdict": "not checked", "why": "the original's outputs do not match the converted graph's"}
    worst, identical = 0.0, True
    for key, a, b in pairs:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return {"verdict": "changed", "why": f"output {key} has shape {list(a.shape)} in the original, "
                                                 f"{list(b.shape)} converted"}
        identical &= a.tobytes() == b.tobytes()
        magnitude = float(np.max(np.abs(a), initial=0.0)) or 1.0
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)) / magnitude)
    verdict = "same bits" if identical else "within float32 rounding" if worst <= CEILING else "changed"
    return {"verdict": verdict, "max_relative": worst, "ceiling": CEILING, "outputs": len(pairs),
            "of": "the original model's own float32 outputs (TF Python) against the converted graph's"}


def conversion_line(check):
    """The report's line for a capture's conversion check, or None."""
    if not check:
        return None
    if "max_relative" not in check:
        return f"conversion: {check['verdict']} ({check.get('why', '')})"
    said = {"same bits": "did not change the model's outputs: the same bits",
            "within float32 rounding": f"moved the model's outputs by at most {check['max_relative']:.2g} of their "
                                       f"magnitude: float32 rounding (below the ceiling of {check['ceiling']:.2g})",
            "changed": f"CHANGED the model's outputs by {check['max_relative']:.3g} of their magnitude, beyond the "
                       f"ceiling of {check['ceiling']:.2g} that reordered float32 arithmetic never reaches"}
    return (f"conversion: the converter's optimizations {said[check['verdict']]} (TF Python, the original model "
            "against the converted graph it wrote)")
