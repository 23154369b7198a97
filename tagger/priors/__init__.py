"""Stage 5, prior relationships applied to scores: implications, taxonomy parents and exclusions
(rules from `label_system.priors`), their measurement, and mining of candidate rules."""
