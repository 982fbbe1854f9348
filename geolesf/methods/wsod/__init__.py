"""Weakly-supervised object detection: WSDDN + OICR refinement + NDI (NDI-WSOD, methods.md §7).

* :mod:`.proposals` — selective search (OpenCV contrib) or precomputed ``.mat``/``.pkl`` proposals;
* :mod:`.backbones` — torchvision VGG16 (dilated conv5, as ``vgg16.dilated_conv5_body``) or a tiny CNN;
* :mod:`.wsddn` — the two-stream MIL head and its image-level loss;
* :mod:`.oicr` — refinement branches, MIST / NGIS seed mining, pseudo-label assignment, box targets;
* :mod:`.ndi` — the negative-deterministic-information memory, NCL and NICE losses;
* :mod:`.detector` — the whole detector, registered as ``ndi-wsod``.
"""
