"""`evaluate` metric modules written for this project; load each with `evaluate.load(<path of its file>)`."""
