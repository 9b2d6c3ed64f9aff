"""One `main(script_args, training_args, model_args)` per method, launched with `accelerate launch -m`."""
