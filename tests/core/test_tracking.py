"""MLflow metric names: grouped by window, then by model, as the MLflow UI shows them; the
object store behind MLflow's artifact proxy named when it is what is down."""

from __future__ import annotations

import pytest

from tasks.core.tracking import artifact_store_down, epoch_metric, experiment_tags, metric_name


@pytest.mark.parametrize(
    ("key", "model", "name"),
    [
        ("train_loss", None, "train/loss"),
        ("valid_pr_auc", None, "valid/pr_auc"),
        ("valid_log_loss", None, "valid/log_loss"),
        ("recall_at_precision", "model", "test/model/recall_at_precision"),
        ("valid_recall_at_precision", "model", "valid/model/recall_at_precision"),
        ("pr_auc", "hist_gradient_boosting", "test_baseline/hist_gradient_boosting/pr_auc"),
        ("threshold", "majority", "test_baseline/majority/threshold"),
    ],
)
def test_metric_names_say_their_window_then_their_model(
    key: str, model: str | None, name: str
) -> None:
    assert metric_name(key, model) == name


def test_the_per_epoch_curves_sort_before_every_single_value() -> None:
    """The MLflow UI orders chart sections by name: the curves must come first."""
    curves = [epoch_metric(k) for k in ("train_loss", "valid_pr_auc", "valid_log_loss")]
    values = [metric_name("recall_at_precision", "hist_gradient_boosting"),
              metric_name("valid_recall_at_precision", "model"), "train/best_epoch"]  # fmt: skip
    assert sorted(curves + values)[:3] == sorted(curves)
    assert curves[0] == "epoch/train_loss"


def test_the_models_scores_sort_before_every_baselines() -> None:
    model = [metric_name(k, "model") for k in ("pr_auc", "recall_at_precision")]
    baselines = [metric_name("pr_auc", b) for b in ("hist_gradient_boosting",
                                                    "logistic_regression", "majority")]  # fmt: skip
    assert sorted(model + baselines)[:2] == sorted(model)


def test_every_experiment_of_ours_is_a_model_training_one_with_a_description() -> None:
    for name, start in [("plumber", "Plumber's training runs"),
                        ("plumber-data", "Plumber's data versions"),
                        ("plumber-releases", "Plumber's release history"),
                        ("plumber-reproduce", "Rebuilds of released models")]:  # fmt: skip
        tags = experiment_tags(name)
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert tags["mlflow.note.content"].startswith(start)


PROXIED = (
    "API request to endpoint /api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.txt "
    "failed with error code 500 != 200"
)


def test_an_artifact_upload_is_blamed_on_the_object_store_only_when_it_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from mlflow.exceptions import MlflowException

    with socket.socket() as held:  # a port that answers
        held.bind(("127.0.0.1", 0))
        held.listen()
        answering = f"http://127.0.0.1:{held.getsockname()[1]}"
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            down = f"http://minio:s3cret@127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
        monkeypatch.setenv("AWS_ENDPOINT_URL", down)
        line = artifact_store_down(MlflowException(PROXIED))
        assert line is not None and line.startswith(
            f"the object store at http://minio:***@127.0.0.1:{down.rsplit(':', 1)[1]} does not "
            "answer (Connection refused): the MLflow server at http://127.0.0.1:5000 keeps"
        ), line
        wrapped = RuntimeError("upload failed")
        wrapped.__cause__ = MlflowException(PROXIED)
        assert artifact_store_down(wrapped) == line
        assert artifact_store_down(MlflowException("RESOURCE_DOES_NOT_EXIST: run x")) is None
        monkeypatch.setenv("AWS_ENDPOINT_URL", answering)  # up: MLflow's error says more
        assert artifact_store_down(MlflowException(PROXIED)) is None
        monkeypatch.delenv("AWS_ENDPOINT_URL")  # no address known (AWS S3 itself)
        assert artifact_store_down(MlflowException(PROXIED)) is None


def test_a_tracking_server_is_asked_again_unless_it_refuses_the_credentials() -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tasks.core.errors import StepError
    from tasks.core.tracking import check_server

    asked: list[str] = []

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(StepError, match=r"\(HTTP 403; 3 attempt\(s\)"):
            check_server(f"http://u:pw@127.0.0.1:{server.server_port}", 5, 3)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/health"]  # refused credentials: not asked again
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(StepError, match=r"does not answer \(ConnectError; 2 attempt"):
        check_server(f"http://127.0.0.1:{port}", 5, 2)
