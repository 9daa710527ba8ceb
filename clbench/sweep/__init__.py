"""Many runs: experiments (scenarios x strategies x seeds), the executors that run them (a local pool
or Ray) and hyperparameter tuning."""
