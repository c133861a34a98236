"""Learning from unlabelled frames: the tools the `pretrain`, `semisup` and `linear_eval` training
modes (marsedge.train.modes) use, and the commands around them.

    contrastive.py   NT-Xent and cluster-aware NT-Xent, gather_with_grad (SimCLR across ranks)
    dense.py         DenseCL-style dense contrastive loss (pretrain.objective: densecl)
    elementwise.py   class memory bank, element-wise contrastive loss, pseudo labels (semisup)
    embedding_heads.py  semisup's contrastive head: the paper's DeepLabv3+ head (stride 4) or a 1x1 MLP
    features.py      frozen-backbone pooled features (clustering, linear evaluation)
    probe.py         the dense nearest-centroid / kNN probe of pretraining's features on val
    cluster.py       k-means of those features: the clusters file cluster-aware pretraining reads
    fn_rate.py       the false-negative rate of SimCLR batches (simulation, torch-free)
    class_folder.py  a classification folder cut from a segmentation set (torch-free)
    cli.py           `marsedge cluster`, `marsedge fn-rate`, `marsedge class-folder`

The contrastive views themselves are data code (`marsedge.data.views`, torch-free).
"""
