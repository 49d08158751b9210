"""The numerical identifiability simulation (Daunhawer et al., ICLR 2023, Sec. 5.1)."""
