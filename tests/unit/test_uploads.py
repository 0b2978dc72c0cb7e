"""The upload state machine (uploads.py) of a device run, driven directly: uploads are of this
run's model, and only devices that uploaded a whole capture take a --devices slot. Plus the
server's one-Host rule and inputs beyond float32 (issue 20)."""
import http.client
import json
import struct

import numpy as np
import pytest

from tfjs_parity import KitError
from tfjs_parity.inputs import _checked
from tfjs_parity.plan import Input
from tfjs_parity.server import PageServer
from tfjs_parity.uploads import PENDING_PER_SLOT, UploadRefused, Uploads

MODEL = "0123456789abcdef"


def header(model_id=MODEL, values=2):
    capture = json.dumps({"metadata": {"model_id": model_id}, "keys": [["a_output", 1]]})
    body = json.dumps({"a_output/0": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]},
                       "__metadata__": {"capture": capture}}).encode()
    return struct.pack("<Q", len(body)) + body


def upload(uploads, device, model_id=MODEL, finish=True):
    path = uploads.path("cpu")
    uploads.receive(f"{path}/begin", header(model_id), device)
    if finish:
        uploads.receive(f"{path}/data", bytes(8), device)
        uploads.receive(f"{path}/end", b"", device)


@pytest.fixture
def uploads(tmp_path):
    return Uploads(tmp_path, ["cpu"], repeatable=True, max_devices=2, model_id=MODEL)


def test_an_upload_of_another_model_is_refused_when_it_begins(uploads, tmp_path):
    with pytest.raises(UploadRefused) as refused:
        upload(uploads, "rogue", model_id="fedcba9876543210")
    assert refused.value.status == 409 and "another model (id fedcba9876543210)" in str(refused.value)
    assert list(tmp_path.iterdir()) == [] and uploads.events.empty()
    upload(uploads, "phone")  # this run's model: taken
    assert uploads.events.get_nowait() == {"event": "uploaded", "device": "phone", "name": "cpu"}


def test_refused_uploads_take_no_device_slot(uploads):
    for fake in range(8):
        with pytest.raises(UploadRefused):
            upload(uploads, f"fake{fake}", model_id="not this run's")
    upload(uploads, "good")
    assert uploads.devices == {"good"}


def test_a_slot_is_taken_by_a_whole_capture_not_by_starting_one(uploads):
    for device in ("a", "b", "c"):
        upload(uploads, device, finish=False)  # three started, none finished: no slot taken yet
    upload(uploads, "d")
    upload(uploads, "e")
    with pytest.raises(UploadRefused) as refused:  # two devices hold the two slots now
        upload(uploads, "f")
    assert refused.value.status == 403
    uploads.take("cpu", "d")  # the kit saved d's capture
    upload(uploads, "d")  # and a device with a slot may upload again


def test_devices_uploading_without_a_slot_are_bounded(uploads):
    for device in range(PENDING_PER_SLOT * 2):
        upload(uploads, f"slow{device}", finish=False)
    with pytest.raises(UploadRefused, match="uploading already"):
        upload(uploads, "one more", finish=False)


def test_a_request_with_two_host_headers_is_refused(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("hello")
    with PageServer({"/page.html": page}) as server:
        host, port = server.netloc.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.putrequest("GET", "/page.html", skip_host=True)
        connection.putheader("Host", server.netloc)
        connection.putheader("Host", "evil.example")
        connection.endheaders()
        assert connection.getresponse().status == 400
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/page.html")
        assert connection.getresponse().status == 200


def test_a_float_input_beyond_float32_is_refused_with_its_count():
    spec = Input("x", [None, 3], "float32")
    with pytest.raises(KitError, match="holds 2 value.s. beyond float32's range"):
        _checked(np.array([[1e300, -1e39, 1.0]]), spec, "in.npy")
    np.testing.assert_array_equal(_checked(np.array([[np.inf, 3e38, 1.0]]), spec, "in.npy"),
                                  np.array([[np.inf, 3e38, 1.0]], np.float32))  # infinity given is infinity meant
