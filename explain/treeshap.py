"""Exact path-dependent TreeSHAP for LightGBM boosters, tabulated per leaf.

Same values as `Booster.predict(pred_contrib=True)` and `shap.TreeExplainer`
(the path-dependent algorithm of Lundberg et al. 2020), computed differently.

For one leaf with value v, let P be the d distinct features on its path and
z_j the share of training rows that follow the path at feature j's splits
(product of child/parent counts). For a row x, the "hot" features H are those
where x satisfies every split of the path on that feature; C = P \\ H are cold.
The leaf's share of E[f | x_S] is v * prod_{j in S} [j in H] * prod_{j not in S} z_j,
so its Shapley values reduce to (w(k, d) = k! (d-k-1)! / d!, e_m the m-th
elementary symmetric polynomial):

    A(H) = sum_k w(k, d) * e_{|H|-k}(z_H)
    U(H) = v * prod_{j not in H} z_j * A(H)
    cold i:  phi_i = -U(H)
    hot i:   phi_i = (1 - z_i) / z_i * U(H \\ {i})

U depends on the row only through the bit mask H, so it is tabulated once per
leaf for all 2^d masks (the idea of FastTreeSHAP v2, with one scalar per mask).
A row then costs one comparison per split node and, per leaf, one table read
per hot path feature. A feature's bit is its order of first appearance from the
root, so every node has one bit and the cold mask of each leaf is built top-down
in one pass over the nodes. Leaves with more than `max_table_depth` distinct
features, or with a zero fraction, compute A on the fly (O(d^2), the classic
extend/unwind of the polynomial) instead.

Rows are processed in blocks, tree by tree inside a block (a tree's tables stay
in cache while the block's rows use them), blocks split across threads with
numba's `prange`. float64 throughout; agrees with LightGBM's TreeSHAP to ~1e-13.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields

import lightgbm as lgb
import numba
import numpy as np

# LightGBM's kZeroThreshold (1e-35f) as the double it compares with.
ZERO_THRESHOLD = float(np.float32(1e-35))
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
_MISSING_CODES = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}
DEFAULT_MAX_TABLE_DEPTH = 16  # 2^16 doubles = 512 KiB for the deepest leaf
BLOCK_ROWS = 64
MAX_PATH_FEATURES = 62  # masks are int64


class UnsupportedModel(ValueError):
    """A model this exact explainer cannot handle; says why."""


@dataclass(frozen=True)
class FlatForest:
    """A LightGBM booster flattened into the arrays the numba kernel reads.

    Nodes and leaves of tree t are numbered from tree_node_start[t] / tree_leaf_start[t],
    nodes in depth-first pre-order (a parent before its children). A child reference
    c >= 0 is a node of the same tree (local number), c < 0 the leaf ~c (local number).
    """

    n_features: int
    base_value: float
    max_nodes: int
    max_leaves: int
    objective: str  # LightGBM's objective, e.g. "regression" (identity link) or "tweedie" (log link)
    tree_node_start: np.ndarray
    tree_leaf_start: np.ndarray
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_categorical: np.ndarray
    node_missing: np.ndarray
    node_default_left: np.ndarray
    node_cat_start: np.ndarray   # categorical splits: their bitset words in cat_bits
    node_cat_end: np.ndarray
    cat_bits: np.ndarray
    node_bit: np.ndarray         # 1 << (the node feature's slot on the path from the root)
    node_left: np.ndarray
    node_right: np.ndarray
    leaf_value: np.ndarray
    leaf_feat_start: np.ndarray  # the leaf's distinct path features, by slot, in feat_*
    feat_index: np.ndarray
    feat_zero: np.ndarray
    feat_ratio: np.ndarray       # (1 - z) / z
    leaf_table_start: np.ndarray  # -1: computed on the fly
    table: np.ndarray

    @property
    def n_trees(self) -> int:
        return len(self.tree_node_start) - 1

    @property
    def table_bytes(self) -> int:
        return int(self.table.nbytes)

    def kernel_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f.name) for f in fields(self)[5:])


def _check_booster(booster: lgb.Booster) -> dict:
    dump = booster.dump_model()
    if dump.get("num_class", 1) != 1 or dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel("multi-class LightGBM models are not supported: the bid model has one output")
    if any(t.get("is_linear") or "leaf_coeff" in t.get("tree_structure", {}) for t in dump["tree_info"]):
        raise UnsupportedModel("LightGBM linear trees are not supported: their leaves are not constants")
    return dump


def _cat_bitset(threshold: str) -> list[int]:
    cats = [int(c) for c in str(threshold).split("||")]
    words = [0] * (max(cats) // 32 + 1)
    for c in cats:
        words[c // 32] |= 1 << (c % 32)
    return words


class _Builder:
    """Collects the flat arrays while walking LightGBM's JSON dump tree by tree."""

    def __init__(self):
        self.node = {k: [] for k in ("feature", "threshold", "cat", "missing", "default_left",
                                     "cat_start", "cat_end", "bit", "left", "right")}
        self.cat_bits: list[int] = []
        self.leaf_value: list[float] = []
        self.leaf_feat_start: list[int] = []
        self.feat_index: list[int] = []
        self.feat_zero: list[float] = []
        self.tree_node_start, self.tree_leaf_start = [0], [0]
        self.base_value = 0.0

    def add_tree(self, root: dict) -> None:
        if "leaf_value" in root:  # a one-leaf tree is a constant: all of it is base value
            self.base_value += root["leaf_value"]
        else:
            total = float(root["internal_count"])
            self._walk(root, slots={}, zero={}, total=total)
        self.tree_node_start.append(len(self.node["feature"]))
        self.tree_leaf_start.append(len(self.leaf_value))

    def _walk(self, node: dict, slots: dict[int, int], zero: dict[int, float], total: float) -> int:
        """Add `node` and its subtree; returns the child reference (node >= 0, leaf < 0)."""
        if "leaf_value" in node:
            self.base_value += node["leaf_value"] * node["leaf_count"] / total
            self.leaf_feat_start.append(len(self.feat_index))
            ordered = sorted(slots, key=slots.get)
            self.feat_index.extend(ordered)
            self.feat_zero.extend(zero[f] for f in ordered)
            self.leaf_value.append(node["leaf_value"])
            return ~(len(self.leaf_value) - 1 - self.tree_leaf_start[-1])
        cols = self.node
        g = len(cols["feature"])
        for column in cols.values():
            column.append(0)
        feature = node["split_feature"]
        slot = slots.get(feature, len(slots))
        if slot >= MAX_PATH_FEATURES:
            raise UnsupportedModel(f"a path with more than {MAX_PATH_FEATURES} distinct features")
        cols["feature"][g] = feature
        cols["bit"][g] = 1 << slot
        cols["missing"][g] = _MISSING_CODES[node["missing_type"]]
        cols["default_left"][g] = bool(node["default_left"])
        if node["decision_type"] == "==":
            words = _cat_bitset(node["threshold"])
            cols["cat"][g] = 1
            cols["cat_start"][g], cols["cat_end"][g] = len(self.cat_bits), len(self.cat_bits) + len(words)
            self.cat_bits.extend(words)
        elif node["decision_type"] == "<=":
            cols["threshold"][g] = float(node["threshold"])
        else:
            raise UnsupportedModel(f"unknown LightGBM decision_type {node['decision_type']!r}")
        count = float(node["internal_count"])
        for child, side in ((node["left_child"], "left"), (node["right_child"], "right")):
            child_count = child.get("internal_count", child.get("leaf_count"))
            ref = self._walk(child, {**slots, feature: slot},
                             {**zero, feature: zero.get(feature, 1.0) * child_count / count}, total)
            cols[side][g] = ref
        return g - self.tree_node_start[-1]


def flatten(booster: lgb.Booster, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH) -> FlatForest:
    """Read the booster's trees (LightGBM's JSON dump) and tabulate U for every leaf."""
    dump = _check_booster(booster)
    b = _Builder()
    for tree in dump["tree_info"]:
        b.add_tree(tree["tree_structure"])

    leaf_feat_start = np.array(b.leaf_feat_start + [len(b.feat_index)], dtype=np.int64)
    feat_zero = np.array(b.feat_zero, dtype=np.float64)
    with np.errstate(divide="ignore"):
        feat_ratio = np.where(feat_zero > 0, (1.0 - feat_zero) / feat_zero, np.inf)
    leaf_value = np.array(b.leaf_value, dtype=np.float64)
    depth = np.diff(leaf_feat_start)
    has_zero = np.add.reduceat(feat_zero == 0, leaf_feat_start[:-1]) > 0 if len(depth) else depth > 0
    tabulated = (depth <= max_table_depth) & ~has_zero
    sizes = np.where(tabulated, 2 ** np.minimum(depth, max_table_depth), 0)
    leaf_table_start = np.where(tabulated, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1).astype(np.int64)
    table = np.zeros(int(sizes.sum()), dtype=np.float64)
    _fill_tables(leaf_value, leaf_feat_start, feat_zero, leaf_table_start, table, _weights(MAX_PATH_FEATURES))

    nodes = np.diff(b.tree_node_start)
    n_leaves = np.diff(b.tree_leaf_start)
    col = b.node
    return FlatForest(
        n_features=booster.num_feature(), base_value=b.base_value,
        objective=str(dump.get("objective", "regression")).split()[0],
        max_nodes=int(max(nodes.max(initial=0), 1)), max_leaves=int(max(n_leaves.max(initial=0), 1)),
        tree_node_start=np.array(b.tree_node_start, dtype=np.int64),
        tree_leaf_start=np.array(b.tree_leaf_start, dtype=np.int64),
        node_feature=np.array(col["feature"], dtype=np.int64),
        node_threshold=np.array(col["threshold"], dtype=np.float64),
        node_categorical=np.array(col["cat"], dtype=np.bool_),
        node_missing=np.array(col["missing"], dtype=np.int8),
        node_default_left=np.array(col["default_left"], dtype=np.bool_),
        node_cat_start=np.array(col["cat_start"], dtype=np.int64),
        node_cat_end=np.array(col["cat_end"], dtype=np.int64),
        cat_bits=np.array(b.cat_bits or [0], dtype=np.uint32),
        node_bit=np.array(col["bit"], dtype=np.int64),
        node_left=np.array(col["left"], dtype=np.int64),
        node_right=np.array(col["right"], dtype=np.int64),
        leaf_value=leaf_value, leaf_feat_start=leaf_feat_start,
        feat_index=np.array(b.feat_index, dtype=np.int64), feat_zero=feat_zero, feat_ratio=feat_ratio,
        leaf_table_start=leaf_table_start, table=table,
    )


def _weights(n: int) -> np.ndarray:
    """w[d, k] = k! (d-k-1)! / d!, the Shapley weight of a coalition of k among d players."""
    w = np.zeros((n + 1, n + 1))
    for d in range(1, n + 1):
        for k in range(d):
            w[d, k] = math.exp(math.lgamma(k + 1) + math.lgamma(d - k) - math.lgamma(d + 1))
    return w


@numba.njit(cache=True)
def _fill_tables(leaf_value, leaf_feat_start, feat_zero, leaf_table_start, table, w):
    for leaf in range(len(leaf_value)):
        start = leaf_table_start[leaf]
        if start < 0:
            continue
        f0 = leaf_feat_start[leaf]
        d = leaf_feat_start[leaf + 1] - f0
        n_masks = 1 << d
        # poly[mask, m] = e_m(z over the features in mask), from mask without its lowest bit.
        poly = np.zeros((n_masks, d + 1))
        poly[0, 0] = 1.0
        for mask in range(1, n_masks):
            low = mask & -mask
            k = 0
            while (1 << k) != low:
                k += 1
            prev = mask ^ low
            z = feat_zero[f0 + k]
            poly[mask, 0] = 1.0
            for m in range(1, d + 1):
                poly[mask, m] = poly[prev, m] + z * poly[prev, m - 1]
        for mask in range(n_masks - 1):  # the full mask is never read
            h = 0
            z_out = 1.0
            for k in range(d):
                if mask >> k & 1:
                    h += 1
                else:
                    z_out *= feat_zero[f0 + k]
            acc = 0.0
            for m in range(h + 1):
                acc += w[d, h - m] * poly[mask, m]
            table[start + mask] = leaf_value[leaf] * z_out * acc


@numba.njit(inline="always")
def _goes_left(fval, node, threshold, categorical, missing_type, default_left, cat_start, cat_end, cat_bits):
    """LightGBM's own Tree::Decision: numerical with its missing-value rules, or categorical bitset."""
    if categorical[node]:
        if math.isnan(fval):
            return False
        iv = int(fval)
        if iv < 0:
            return False
        word = cat_start[node] + iv // 32
        if word >= cat_end[node]:
            return False
        return (cat_bits[word] >> np.uint32(iv % 32)) & np.uint32(1) == 1
    missing = missing_type[node]
    if math.isnan(fval) and missing != MISSING_NAN:
        fval = 0.0
    if (missing == MISSING_ZERO and -ZERO_THRESHOLD <= fval <= ZERO_THRESHOLD) or \
            (missing == MISSING_NAN and math.isnan(fval)):
        return default_left[node]
    return fval <= threshold[node]


@numba.njit(cache=True)
def _leaf_on_the_fly(phi, cold, d, v, index, zero, w, poly, tmp):
    """One untabulated leaf: e_m of the hot zero fractions, then unwind each hot feature."""
    zc = 1.0
    poly[0] = 1.0
    n = 0
    for k in range(d):
        if cold >> k & 1:
            zc *= zero[k]
        else:
            n += 1
            poly[n] = 0.0
            for m in range(n, 0, -1):
                poly[m] += zero[k] * poly[m - 1]
    if zc == 0.0:
        return
    a_hot = 0.0
    for m in range(n + 1):
        a_hot += w[d, n - m] * poly[m]
    for k in range(d):
        if cold >> k & 1:
            phi[index[k]] -= v * zc * a_hot
            continue
        # Divide the polynomial by (1 + z_k t): stable since z_k <= 1.
        tmp[0] = 1.0
        for m in range(1, n):
            tmp[m] = poly[m] - zero[k] * tmp[m - 1]
        a = 0.0
        for m in range(n):
            a += w[d, n - 1 - m] * tmp[m]
        phi[index[k]] += v * zc * (1.0 - zero[k]) * a


# The forest's arrays are separate arguments: numba reads a namedtuple's fields ~30x slower here.
def _kernel(X, out, block, w, max_nodes, max_leaves,
                 tree_node_start, tree_leaf_start, node_feature, node_threshold, node_categorical,
                 node_missing, node_default_left, node_cat_start, node_cat_end, cat_bits, node_bit,
                 node_left, node_right, leaf_value, leaf_feat_start, feat_index, feat_zero, feat_ratio,
                 leaf_table_start, table):
    n_rows = X.shape[0]
    n_trees = len(tree_node_start) - 1
    n_blocks = (n_rows + block - 1) // block
    for blk in numba.prange(n_blocks):
        node_cold = np.empty(max_nodes, dtype=np.int64)
        leaf_cold = np.empty(max_leaves, dtype=np.int64)
        poly = np.empty(MAX_PATH_FEATURES + 2)
        tmp = np.empty(MAX_PATH_FEATURES + 2)
        r1 = min(n_rows, (blk + 1) * block)
        for t in range(n_trees):
            n0 = tree_node_start[t]
            n_nodes = tree_node_start[t + 1] - n0
            l0 = tree_leaf_start[t]
            for r in range(blk * block, r1):
                x = X[r]
                phi = out[r]
                if n_nodes:
                    node_cold[0] = 0
                for j in range(n_nodes):
                    g = n0 + j
                    bit = node_bit[g]
                    here = node_cold[j]
                    if _goes_left(x[node_feature[g]], g, node_threshold, node_categorical, node_missing,
                                  node_default_left, node_cat_start, node_cat_end, cat_bits):
                        to_left, to_right = here, here | bit
                    else:
                        to_left, to_right = here | bit, here
                    c = node_left[g]
                    if c >= 0:
                        node_cold[c] = to_left
                    else:
                        leaf_cold[~c] = to_left
                    c = node_right[g]
                    if c >= 0:
                        node_cold[c] = to_right
                    else:
                        leaf_cold[~c] = to_right
                for j in range(tree_leaf_start[t + 1] - l0):
                    leaf = l0 + j
                    f0 = leaf_feat_start[leaf]
                    d = leaf_feat_start[leaf + 1] - f0
                    cold = leaf_cold[j]
                    start = leaf_table_start[leaf]
                    if start < 0:
                        _leaf_on_the_fly(phi, cold, d, leaf_value[leaf], feat_index[f0:f0 + d],
                                         feat_zero[f0:f0 + d], w, poly, tmp)
                        continue
                    hot = ((1 << d) - 1) ^ cold
                    u_hot = table[start + hot]
                    for k in range(d):
                        if hot >> k & 1:
                            phi[feat_index[f0 + k]] += feat_ratio[f0 + k] * table[start + (hot ^ (1 << k))]
                        else:
                            phi[feat_index[f0 + k]] -= u_hot


# Both cores for batches; one row (the panel's single decision) runs serially, since waking
# a thread pool costs more than the row itself on a busy machine.
_shap_kernel = numba.njit(parallel=True, cache=True)(_kernel)
_shap_kernel_serial = numba.njit(cache=True)(_kernel)
_KERNEL_LOCK = threading.Lock()


class FastTreeShap:
    """Exact path-dependent TreeSHAP for one LightGBM booster; build once, call many times."""

    def __init__(self, booster: lgb.Booster, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH):
        self.forest = flatten(booster, max_table_depth)
        self._w = _weights(MAX_PATH_FEATURES)
        self._arrays = self.forest.kernel_arrays()

    @property
    def base_value(self) -> float:
        return self.forest.base_value

    def shap_values(self, X: np.ndarray, n_threads: int | None = None,
                    block: int = BLOCK_ROWS) -> np.ndarray:
        """Contributions, float64 [n_rows, n_features]; base_value + row sum = raw model output."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.forest.n_features:
            raise ValueError(f"X must be [n, {self.forest.n_features}], got shape {X.shape}")
        out = np.zeros((X.shape[0], self.forest.n_features))
        # numba's workqueue threading layer (its fallback without OpenMP/TBB) aborts the process
        # when two Python threads launch parallel kernels at once (Streamlit sessions are
        # threads); each call uses every core anyway, so one at a time.
        args = (X, out, block, self._w, self.forest.max_nodes, self.forest.max_leaves, *self._arrays)
        if len(X) <= block or n_threads == 1:
            _shap_kernel_serial(*args)
            return out
        with _KERNEL_LOCK:
            previous = numba.get_num_threads()
            numba.set_num_threads(n_threads or previous)
            try:
                _shap_kernel(*args)
            finally:
                numba.set_num_threads(previous)
        return out
