"""CoMM (Dufumier et al., ICLR 2025): bimodal Trifeatures and the multimodal contrastive objective."""
