"""Evaluation: walk-forward backtests and research models, run by `cryptocast backtest`."""
