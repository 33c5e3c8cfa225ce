"""Knowledge transfer (MobileBERT, Sun et al. 2020): :mod:`leanbert.distill.transfer`."""
