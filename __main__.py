"""``python -m harx ...`` is the ``harx`` command (and what ``torchrun -m harx`` starts)."""

from harx.cli import app

app(prog_name="harx")
