"""The ``dp68`` generator (paper III-B-1): a DeepPrivacy-style inpainting GAN conditioned on the
68 landmarks.

:mod:`.data` prepares training shards from the training split (needs the detector stack);
:mod:`.shards` reads them and rasterises the conditioning (numpy + OpenCV only); :mod:`.nets` holds
the generator and discriminator and :mod:`.train` the training loop and the export (torch only),
so the training path runs on a stock PyTorch install with OpenCV.
"""
