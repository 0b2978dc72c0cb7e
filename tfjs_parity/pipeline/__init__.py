"""The kit's steps as library functions (issue 31): each takes a typed options dataclass and
returns what the step prints; the scripts at the top level parse arguments into those
options and call them, so the steps are testable, and callable, without a subprocess.

  create.py    step 1: load or build the model, convert it, run it in TensorFlow Python,
               capture the exact float64 answer (create_keras_model.py)
  compare.py   step 4: diff, judge against the exact answer, gate, explain
               (compare_outputs.py)

Steps 2 and 3 are the runners' (runners/: one module per runtime), which run_node.py and
run_browser.py call.
"""
