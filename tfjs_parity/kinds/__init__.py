"""The kind of model: the seam where a second kind (a graph model: a GraphDef of ops that
tfjs runs with model.execute) plugs in beside the layers model of today.

A kind is a module here (Python) with its JS half beside it (<name>.js, shared by Node and
the page), and it answers, for its models:
  - what tfjs can run (checked before anything runs: one line naming what it cannot);
  - the probe plan (plan.py): each point a named tensor of the model's graph, what feeds
    it, whether its weights are captured there;
  - Python's execution of the plan (the probe) and the conversion for tfjs;
  - `bound`: a point's rounding bound, looked up in the bounds registry;
  - in JS: `load(tf, url, options)`; `shipped(tf, model)`, the model as a user calls it
    ({inputNames, predict(feed) -> [its output tensors]}: what is timed); and
    `probe(tf, model, plan)`, {inputNames, predict(feed) -> [every point's output tensors,
    in plan order], weightsOf(point) -> [its weight tensors]}.
The plan records its kind (plan.kind), so every runtime executes it with the same one."""
from . import graph_model, layers_model

KINDS = {kind.NAME: kind for kind in (layers_model, graph_model)}


def kind_of(plan):
    """The kind module of a probe plan; KitError naming the ones there are."""
    from .. import KitError
    if plan.kind not in KINDS:
        raise KitError(f"the probe plan is of a model kind {plan.kind!r} this kit does not have "
                       f"({', '.join(KINDS)}); run create_keras_model.py again")
    return KINDS[plan.kind]


def local_reference(converted_dir, reference):
    """The local reference of the model converted in `converted_dir` (each point alone, in
    float64, on the inputs a runtime fed it; its weights from `reference`, the float64
    capture), by its plan's kind: build it once, judge every capture with it."""
    from ..plan import PLAN_FILE, Plan
    plan = Plan.load(converted_dir / PLAN_FILE)
    return kind_of(plan).local_reference(converted_dir, plan, reference)
