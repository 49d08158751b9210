"""Beyond DAGs (Liu et al.): the latent partial causal model, L1 contrastive learning, MCC."""
