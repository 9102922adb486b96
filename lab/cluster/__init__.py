"""`lab up` and `lab down` as ordered idempotent actions, the lab a command works on (session),
and `lab logs`."""
