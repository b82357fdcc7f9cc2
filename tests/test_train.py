"""End-to-end runs of the real config on real Fashion-MNIST, in-process with tiny limits."""

from pathlib import Path


def test_run_writes_results_checkpoints_and_logs(train_run):
    cfg, results = train_run(["trainer.max_epochs=2"])
    run_dir = Path(cfg.hydra.runtime.output_dir)
    assert results["status"] == "completed"
    assert set(results["metrics"]) >= {"val/acc_best", "test/acc", "test/loss"}
    assert 0.0 < results["metrics"]["test/acc"] <= 1.0
    assert len(results["epoch_times"]) == 2 and all(t > 0 for t in results["epoch_times"])
    assert results["choices"]["optimizer"] == "adamw" and results["choices"]["model"] == "mlp"
    assert (run_dir / "checkpoints" / "best.ckpt").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "csv" / "metrics.csv").exists()
