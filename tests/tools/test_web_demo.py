"""
demo/app.py, the web demo: the rows of the segments table, the drawing and the downloadable
files from the app's functions; then the page itself in headless Chromium (playwright), served
by the app in a subprocess: upload, drawing, table rows equal to the model's predictions,
nothing requested outside 127.0.0.1, an undecodable image shown as an error.
"""
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
import torch

from detectron2.structures import Instances

from model_utils import REPO
# the tiny random-weight model of the demo's tests, and its helpers
from test_demo import (  # noqa: F401
    PANOPTIC_CONFIG, TINY_OPTS, _blank, _cfg, bad_hf_directories, checkpoint, demo_cli
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
EXAMPLE = os.path.join(REPO, "demo", "examples", "synthetic_2.jpg")
OTHER_EXAMPLE = os.path.join(REPO, "demo", "examples", "synthetic_3.jpg")
ARTIFACTS = os.path.join(REPO, "output", "test_artifacts")
# the rendered table: one list of cell texts per row
ROWS_JS = """() => Array.from(document.querySelectorAll('#segments tbody tr')).map(
    row => Array.from(row.querySelectorAll('td')).map(cell => cell.textContent))"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def app():
    from demo import app as module

    return module


@pytest.fixture(scope="module")
def web(app, checkpoint, tmp_path_factory):  # noqa: F811
    return app.WebDemo(_cfg("MODEL.WEIGHTS", checkpoint), str(tmp_path_factory.mktemp("web")))


# ----------------------------------------------------------------------------- rows
def test_segment_rows_of_hand_made_predictions(app):
    metadata = SimpleNamespace(thing_classes=["disk", "box"], stuff_classes=["disk", "box", "sky"])
    ids = torch.zeros(4, 5, dtype=torch.int32)
    ids[0, :] = 2  # 5 px of segment 2
    ids[1:, :2] = 1  # 6 px of segment 1; 9 px void
    segments = [{"id": 2, "isthing": False, "category_id": 2},
                {"id": 1, "isthing": True, "category_id": 1}]
    rows = app.segment_rows({"panoptic_seg": (ids, segments)}, "panoptic", metadata)
    assert rows == [("box", "", "30.00"), ("sky", "", "25.00")]

    instances = Instances((4, 5))
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, :, :] = True
    masks[2, 0, 0] = True
    instances.pred_masks = masks
    instances.scores = torch.tensor([0.9, 0.5, 0.25])
    instances.pred_classes = torch.tensor([1, 0, 0])
    rows = [("box", "0.900", "20.00"), ("disk", "0.500", "100.00"), ("disk", "0.250", "5.00")]
    for threshold, shown in ((0.2, 3), (0.3, 2), (0.5, 1), (0.9, 0)):  # scores above it, as drawn
        shown_rows = app.segment_rows({"instances": instances}, "instance", metadata, threshold)
        assert shown_rows == rows[:shown]

    scores = torch.zeros(3, 4, 5)
    scores[2] = 0.6
    scores[0, :, :1] = 0.8  # 4 px of disk, mean 0.8
    scores[1, 0, 1:] = torch.tensor([0.7, 0.9, 0.7, 0.9])  # 4 px of box, mean 0.8
    scores[1, 1, 1] = 0.7  # 1 more px of box: 5 px, mean 0.78
    rows = app.segment_rows({"sem_seg": scores}, "semantic", metadata)
    assert rows == [
        ("sky", "0.600", "55.00"), ("box", "0.780", "25.00"), ("disk", "0.800", "20.00")
    ]


def test_rows_html_escapes_class_names(app):
    table = app.rows_html([("a<b & c", "0.500", "1.00")])
    assert "<td>a&lt;b &amp; c</td><td>0.500</td><td>1.00</td>" in table
    assert "<th>class</th><th>score</th><th>area %</th>" in table
    assert "Segments: none" in app.rows_html([])


def test_segment_rows_unknown_task(app):
    from predictor import DemoError

    with pytest.raises(DemoError, match="Unknown task 'depth'"):
        app.segment_rows({}, "depth", None)


# ----------------------------------------------------------------------------- app logic
@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_run_gives_the_demos_drawing_and_rows(web, app, checkpoint, task):  # noqa: F811
    from predictor import VisualizationDemo

    demo = VisualizationDemo(_cfg("MODEL.WEIGHTS", checkpoint), task=task, confidence_threshold=0.0)
    np.random.seed(0)  # the Visualizer jitters colors with NumPy's global random numbers
    predictions, vis = demo.run_on_image(cv2.imread(EXAMPLE))
    np.random.seed(0)
    drawing, rows, files = web.run(EXAMPLE, "synthetic_2.jpg", task, 0.0)
    assert np.array_equal(drawing, vis.get_image())  # drawn as demo.py draws
    assert rows == app.segment_rows(predictions, task, demo.metadata, 0.0)
    if task == "panoptic":
        assert len(rows) == len(predictions["panoptic_seg"][1]) > 0
    elif task == "instance":
        scores = predictions["instances"].scores.tolist()
        assert [r[1] for r in rows] == [f"{s:.3f}" for s in scores]
        assert len(rows) == 3  # TEST.DETECTIONS_PER_IMAGE, all above 0
    else:
        assert sum(float(r[2]) for r in rows) == pytest.approx(100.0, abs=0.05)
    assert os.path.basename(files[0]) == "synthetic_2_predictions.zip"


def test_threshold_and_task_checks(web):
    from predictor import DemoError

    assert web.run(EXAMPLE, "x.jpg", "instance", 1.0)[1] == []  # no score is above 1
    with pytest.raises(DemoError, match=r"Confidence threshold 1.5: must be in \[0, 1\]"):
        web.run(EXAMPLE, "x.jpg", "instance", 1.5)
    with pytest.raises(DemoError, match="Unknown task 'depth'"):
        web.view("depth", 0.5)


def test_files_are_the_save_predictions_formats(web, demo_cli, checkpoint, tmp_path):  # noqa: F811
    image = tmp_path / "scene.png"
    shutil.copyfile(EXAMPLE, image)  # another name, same pixels
    _, _, files = web.run(str(image), "scene.png", "panoptic", 0.5)
    names = [os.path.basename(f) for f in files]
    assert names == ["scene_predictions.zip", "instances.json", "panoptic.json",
                     "panoptic_scene.png", "sem_seg_scene.png"]
    saved = tmp_path / "saved"
    argv = ["--config-file", PANOPTIC_CONFIG, "--input", str(image), "--save-predictions",
            str(saved), "--opts", *TINY_OPTS, "MODEL.WEIGHTS", checkpoint]
    assert demo_cli.main(argv) == 0
    with zipfile.ZipFile(files[0]) as archive:
        saved_files = sorted(n for n in archive.namelist() if not n.endswith("/"))
        assert saved_files == ["instances.json", "panoptic.json", "panoptic/scene.png",
                               "sem_seg/scene.png"]
        for name in saved_files:  # byte for byte what demo.py --save-predictions writes
            assert archive.read(name) == (saved / name).read_bytes(), name
    assert Path(files[1]).read_bytes() == (saved / "instances.json").read_bytes()


def test_undecodable_upload_is_one_message(app, tmp_path):
    from predictor import DemoError

    broken = tmp_path / "upload_0001"
    broken.write_text("not an image")
    with pytest.raises(DemoError) as error:
        app.read_upload(str(broken), "holiday.png")
    assert str(error.value).startswith("Cannot read 'holiday.png' as an image: not an image format")
    assert str(broken) not in str(error.value)


def test_command_line(app, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PORT", "8123")
    args = app.get_parser().parse_args(["--config-file", "c.yaml", "MODEL.WEIGHTS", "m.pth"])
    assert (args.port, args.opts) == (8123, ["MODEL.WEIGHTS", "m.pth"])
    assert args.examples == os.path.join(REPO, "demo", "examples")
    assert [os.path.basename(p) for p in app.example_images(args.examples)] == [
        "synthetic_1.jpg", "synthetic_2.jpg", "synthetic_3.jpg"]
    for key, value in app.OFFLINE_ENV.items():  # set when the module was imported
        assert os.environ[key] == value

    def fail(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(app, "WebDemo", fail)
    missing = str(tmp_path / "none")
    assert app.main(["--config-file", PANOPTIC_CONFIG, "--examples", missing]) == 2
    assert capsys.readouterr().err == f"app.py: error: --examples {missing!r} is not a folder\n"


def test_bad_weights_stop_before_serving(app, checkpoint, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the page was built")

    monkeypatch.setattr(app, "build_page", fail)
    argv = ["--config-file", PANOPTIC_CONFIG, *TINY_OPTS, "MODEL.WEIGHTS"]
    for directory, says in bad_hf_directories(tmp_path):
        assert app.main(argv + [str(directory)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"app.py: error: MODEL.WEIGHTS: {directory}") and says in err
    assert app.main(argv + [str(tmp_path / "none.pth")]) == 2
    assert "none.pth' does not exist" in capsys.readouterr().err


def test_port_in_use_is_one_message(app, checkpoint, capsys):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--config-file", PANOPTIC_CONFIG, "--port", str(port), *TINY_OPTS,
                "MODEL.WEIGHTS", checkpoint]
        assert app.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"app.py: error: Cannot serve on 127.0.0.1:{port} (--port / $PORT)")


# ----------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log_path) -> str:
    with open(log_path) as f:
        return f.read()[-3000:]


def _wait_until_serving(url: str, server: subprocess.Popen, log_path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the app exited with {server.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not serve {url} within {timeout:.0f} s:\n{_tail(log_path)}")


@pytest.fixture
def served_app(checkpoint, tmp_path):  # noqa: F811
    """The app in a subprocess on a free loopback port: (url, process, log file)."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, os.path.join(REPO, "demo", "app.py"), "--config-file", PANOPTIC_CONFIG,
           "--port", str(port), *TINY_OPTS, "MODEL.WEIGHTS", checkpoint]
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, server, log_path)
        yield url, server, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_rows(page, expected, timeout: float = 60.0):
    """The table's rows once they equal ``expected`` (or when ``timeout`` ends: the last seen)."""
    deadline = time.monotonic() + timeout
    rows = None
    while time.monotonic() < deadline:
        rows = [tuple(r) for r in page.evaluate(ROWS_JS)]
        if rows == expected:
            break
        time.sleep(0.25)
    return rows


def _wait_for_preview(page, name: str):
    # uploads are asynchronous: submit once the input's preview shows the file
    page.locator(f'#image img[src$="/{name}"]').wait_for(state="attached", timeout=30_000)


def _upload(page, path):
    page.locator("#image input[type=file]").set_input_files(path)
    _wait_for_preview(page, os.path.basename(path))


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (`make test` installs it when run "
    "as root)",
)
def test_page_in_chromium(served_app, web, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, server, log_path = served_app
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    expected = {  # computed here, with the same weights, by the function the app calls
        task: web.run(image, os.path.basename(image), task, threshold)
        for task, image, threshold in (
            ("panoptic", EXAMPLE, 0.5), ("instance", EXAMPLE, 0.0), ("semantic", OTHER_EXAMPLE, 0.0)
        )
    }
    assert expected["panoptic"][1] and len(expected["instance"][1]) == 3
    requested = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.on("websocket", lambda ws: requested.append(ws.url))
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="networkidle")

            # an undecodable file: one message on the page, and the server keeps serving
            _upload(page, str(broken))
            page.locator("#submit").click()
            message = "Cannot read 'broken.png' as an image"
            toast = page.locator(".toast-body").filter(has_text=message)
            toast.first.wait_for(state="visible")
            assert "not an image format" in toast.first.inner_text()
            assert server.poll() is None

            _upload(page, EXAMPLE)
            page.locator("#submit").click()
            rows = _wait_for_rows(page, expected["panoptic"][1])
            assert rows == expected["panoptic"][1]
            drawing_src = page.locator("#drawing img").first.get_attribute("src")
            drawn = cv2.imdecode(np.frombuffer(page.request.get(drawing_src).body(), np.uint8), 1)
            # the Visualizer picks colors at random: the page's drawing leaves the image as it is
            # where the expected drawing does, and colors the rest
            blank = _blank(cv2.imread(EXAMPLE)).astype(int)
            untouched = (expected["panoptic"][0] == blank).all(2)
            change = np.abs(drawn[:, :, ::-1].astype(int) - blank).sum(2)
            assert drawn.shape == expected["panoptic"][0].shape and 0.2 < (~untouched).mean()
            assert change[untouched].mean() < 3 and change[~untouched].mean() > 20
            links = page.locator("#files a[href]").evaluate_all("links => links.map(a => a.href)")
            (archive_url,) = [u for u in links if u.endswith("/synthetic_2_predictions.zip")]
            with zipfile.ZipFile(io.BytesIO(page.request.get(archive_url).body())) as archive:
                with zipfile.ZipFile(expected["panoptic"][2][0]) as want_archive:
                    assert archive.namelist() == want_archive.namelist()
                    assert json.loads(archive.read("panoptic.json")) == json.loads(
                        want_archive.read("panoptic.json"))

            page.locator("#task").get_by_label("instance").check()
            threshold = page.locator("#threshold input[type=number]")
            threshold.fill("0")
            threshold.press("Enter")
            page.locator("#submit").click()
            rows = _wait_for_rows(page, expected["instance"][1])
            assert rows == expected["instance"][1], _tail(log_path)

            # an example of the examples folder, picked on the page
            page.locator('#examples button:has(img[src$="/synthetic_3.jpg"])').click()
            _wait_for_preview(page, "synthetic_3.jpg")
            page.locator("#task").get_by_label("semantic").check()
            page.locator("#submit").click()
            rows = _wait_for_rows(page, expected["semantic"][1])
            assert rows == expected["semantic"][1], _tail(log_path)
            page.locator('#files a[href$="/synthetic_3_predictions.zip"]').wait_for()
            page.wait_for_timeout(500)  # the outputs fade back in after an update

            os.makedirs(ARTIFACTS, exist_ok=True)
            screenshot = os.path.join(ARTIFACTS, "web_demo.png")
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot of the web demo: {screenshot}")
        finally:
            browser.close()
    web_schemes = ("http", "https", "ws", "wss")
    hosts = {urlparse(u).hostname for u in requested if urlparse(u).scheme in web_schemes}
    assert hosts == {"127.0.0.1"}, sorted(u for u in requested if "127.0.0.1" not in u)
    assert server.poll() is None, _tail(log_path)


def test_make_targets(tmp_path):
    """`make web-demo` serves app.py with PORT and WEIGHTS; `make browser` (run by `make test`)
    does nothing where Chromium is installed."""
    make = ["make", "-s", "-C", REPO]
    dry = subprocess.run(make + ["-n", "web-demo", "PORT=8123", "WEIGHTS=w.pth"],
                         capture_output=True, text=True, check=True).stdout
    assert ("demo/app.py --config-file configs/synthetic/panoptic.yaml --port 8123 "
            "MODEL.WEIGHTS w.pth") in dry
    with open(os.path.join(REPO, "Makefile")) as f:
        assert re.search(r"^test:.* browser\b", f.read(), re.MULTILINE)
    if os.path.exists(CHROMIUM):
        done = subprocess.run(make + ["browser"], capture_output=True, text=True, check=True)
        assert done.stdout == done.stderr == ""
