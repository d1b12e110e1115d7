"""The head contract, tested over the whole registry, on small synthetic caches.

Every head must: fit and return itself; give probabilities of shape (N, C) that sum to 1; keep
every sample whatever its length (1 frame or 700); predict a sample the same alone or in a batch
(padding never leaks); round-trip through save/load with identical predictions; refuse features
of another width or class list; and give the same numbers for the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from harx.features.errors import CacheMismatchError, InvalidOptionError, UnknownNameError
from harx.features.reader import FeatureStore
from harx.features.synthetic import make_synthetic_cache, synthetic_class_names
from harx.temporal import TemporalHead, create_head, head_options, list_heads
from harx.temporal.errors import NotFittedError

FAST = {"epochs": 3}            # contract tests check behaviour, not accuracy
#: what a head needs beyond the features: convlstm reads each 16-d frame as a 4-channel 2x2 map
EXTRA = {"convlstm": {"map_size": 2}}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """3 classes (box, fall, rise), 16-d, lengths 8..60 frames, split by person."""
    path = make_synthetic_cache(tmp_path_factory.mktemp("heads") / "small.h5", n_samples=60, embed_dim=16,
                                n_classes=3, mean_frames=20, max_frames=60, seed=1)
    store = FeatureStore(path)
    return store, store.load("train"), store.load("val"), store.load("test")


def _fit(name, store, train, val, **kw):
    head = create_head(name, store.embed_dim, len(store.class_names), **{**FAST, **EXTRA.get(name, {}), **kw})
    return head.fit(*train, X_val=val[0], y_val=val[1], class_names=store.class_names)


# ----------------------------------------------------------------------------- registry

def test_registry_lists_every_family():
    assert list_heads() == ["convlstm", "gru", "lstm", "meanpool", "tcn", "transformer", "vote"]


def test_unknown_head_names_the_choices():
    with pytest.raises(UnknownNameError, match="unknown head 'i3d'; choose one of: convlstm, gru, lstm, meanpool, tcn, "
                                               "transformer, vote"):
        create_head("i3d", 16, 3)


def test_unknown_option_is_refused_with_the_options_listed():
    with pytest.raises(InvalidOptionError, match="head 'vote' has no option 'hidden_sise'.*hidden_size"):
        create_head("vote", 16, 3, hidden_sise=4)


def test_none_options_keep_the_head_defaults():
    assert create_head("lstm", 16, 3, hidden_size=None).hidden_size == head_options("lstm")["hidden_size"]
    assert create_head("lstm", 16, 3, hidden_size=32).hidden_size == 32


@pytest.mark.parametrize("name", list_heads())
def test_registry_name_is_the_head_name_and_params_are_complete(name):
    head = create_head(name, 16, 3)
    assert head.name == name
    params = head.get_params()
    assert params["num_features"] == 16 and params["num_classes"] == 3
    clone = create_head(name, params.pop("num_features"), params.pop("num_classes"), **params)
    assert clone.get_params() == head.get_params()
    assert head.aggregation


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"crop_frames": 0}])
def test_out_of_range_options_fail_at_fit(small, bad):
    store, train, val, _ = small
    with pytest.raises(InvalidOptionError, match=next(iter(bad))):
        _fit("lstm", store, train, val, **bad)


def test_recurrent_options_are_checked():
    store_like = np.zeros((5, 16), np.float32)
    head = create_head("lstm", 16, 3, pooling="median")
    with pytest.raises(InvalidOptionError, match="pooling must be one of last, mean, max"):
        head.fit([store_like] * 3, [0, 1, 2])


# ----------------------------------------------------------------------------- the contract

@pytest.mark.parametrize("name", list_heads())
def test_contract(small, name, tmp_path):
    store, train, val, test = small
    head = _fit(name, store, train, val)
    X, y = test
    P = head.predict_proba(X)
    assert P.shape == (len(X), len(store.class_names)), f"{name}: probabilities of shape {P.shape}"
    assert np.all(P >= 0) and np.allclose(P.sum(1), 1.0, atol=1e-5), f"{name}: rows do not sum to 1"
    pred = head.predict(X)
    assert pred.shape == (len(X),) and set(pred) <= set(range(len(store.class_names)))
    assert list(head.classes_) == store.class_names and head.n_features_in_ == store.embed_dim
    assert 1 <= head.best_epoch_ <= head.n_epochs_ <= 3
    scores = head.predict_scores(X)
    assert next(iter(scores)) == "probability" and np.allclose(scores["probability"], P)

    path = head.save(tmp_path / "head.pt", meta={"note": "hello"})
    again = TemporalHead.load(path)
    assert type(again) is type(head) and again.get_params() == head.get_params()
    assert np.array_equal(again.predict_proba(X), P), f"{name}: predictions changed through save/load"
    assert again.checkpoint_meta_ == {"note": "hello"}
    assert again.best_epoch_ == head.best_epoch_

    with pytest.raises(CacheMismatchError, match="32-d features.*trained on 16-d"):
        again.check_compatible(32, store.class_names)
    with pytest.raises(CacheMismatchError, match="classes"):
        again.check_compatible(16, ["a", "b", "c"])
    again.check_compatible(16, store.class_names)


@pytest.mark.parametrize("name", list_heads())
def test_unfitted_head_says_so(name):
    head = create_head(name, 16, 3)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        head.predict_proba([np.zeros((4, 16), np.float32)])


@pytest.mark.parametrize("name", list_heads())
def test_any_length_is_kept_and_padding_never_leaks(small, name):
    store, train, val, _ = small
    head = _fit(name, store, train, val)
    rng = np.random.default_rng(0)
    lengths = [1, 2, 700, 5, 1, 64, 65, 300]
    X = [rng.standard_normal((n, store.embed_dim)).astype(np.float16) for n in lengths]
    P = head.predict_proba(X)
    assert P.shape == (len(lengths), 3), "a sample was dropped"
    for i, x in enumerate(X):
        alone = head.predict_proba([x])[0]
        assert np.allclose(alone, P[i], atol=1e-5), \
            f"{name}: a sample of {lengths[i]} frames scored differently alone and in a batch"


@pytest.mark.parametrize("name, options", [("lstm", {"bidirectional": True}), ("lstm", {"pooling": "mean"}),
                                           ("gru", {"pooling": "max", "num_layers": 2}),
                                           ("lstm", {"bidirectional": True, "num_layers": 2, "deltas": False,
                                                     "proj_size": 0}),
                                           ("tcn", {"pooling": "max", "kernel_size": 5, "num_blocks": 2}),
                                           ("tcn", {"deltas": False}),
                                           ("transformer", {"pooling": "mean", "num_layers": 2, "d_model": 16,
                                                            "num_heads": 2, "deltas": False})])
def test_head_variants_keep_samples_apart(name, options):
    rng = np.random.default_rng(2)
    X = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 3, 250, 40, 2)]
    head = create_head(name, 8, 2, epochs=2, batch_size=2, **options).fit(X, [0, 1, 0, 1, 0])
    P = head.predict_proba(X)
    for i, x in enumerate(X):
        assert np.allclose(head.predict_proba([x])[0], P[i], atol=1e-5), (name, options, len(x))


@pytest.mark.parametrize("name, bad, message", [("tcn", {"kernel_size": 4}, "kernel_size must be odd"),
                                                ("tcn", {"pooling": "last"}, "pooling must be one of mean, max"),
                                                ("transformer", {"d_model": 30, "num_heads": 4},
                                                 "d_model must be even and divisible by num_heads"),
                                                ("transformer", {"pooling": "last"}, "pooling must be one of mean, cls")])
def test_convolution_and_attention_options_are_checked(name, bad, message):
    with pytest.raises(InvalidOptionError, match=message):
        create_head(name, 8, 2, **bad).fit([np.zeros((3, 8), np.float32)] * 2, [0, 1])


@pytest.mark.parametrize("name", list_heads())
def test_training_takes_one_frame_and_very_long_samples(small, name):
    store, *_ = small
    rng = np.random.default_rng(1)
    lengths = [1, 1, 2, 900, 3, 40, 1, 500, 7]
    X = [rng.standard_normal((n, store.embed_dim)).astype(np.float32) for n in lengths]
    y = np.arange(len(lengths)) % 3
    head = create_head(name, store.embed_dim, 3, epochs=2, batch_size=4, **EXTRA.get(name, {})).fit(
        X, y, X_val=X[:4], y_val=y[:4])
    assert head.predict_proba(X).shape == (len(X), 3)


@pytest.mark.parametrize("name", list_heads())
def test_same_seed_same_model(small, name):
    store, train, val, test = small
    a = _fit(name, store, train, val, random_state=3).predict_proba(test[0])
    b = _fit(name, store, train, val, random_state=3).predict_proba(test[0])
    c = _fit(name, store, train, val, random_state=4).predict_proba(test[0])
    assert np.array_equal(a, b), f"{name}: same seed gave different probabilities"
    assert not np.array_equal(a, c), f"{name}: the seed has no effect"


def test_fit_does_not_touch_the_callers_torch_rng(small):
    import torch

    store, train, val, _ = small
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    _fit("meanpool", store, train, val)
    assert torch.equal(torch.rand(3), before)


def test_without_validation_it_trains_exactly_epochs(small):
    store, train, *_ = small
    head = create_head("meanpool", store.embed_dim, 3, epochs=4).fit(*train)
    assert head.n_epochs_ == 4 and head.best_epoch_ == 4 and not head.stopped_early_
    assert all(h["val_accuracy"] is None for h in head.history_)


def test_automatic_epochs_scale_with_the_data():
    head = create_head("lstm", 16, 3)                     # batch 32, auto_steps 400
    assert head.schedule(90) == (133, 33)                 # demo-sized: 3 steps an epoch
    assert head.schedule(765) == (17, 4)                  # KTH-sized: 24 steps an epoch
    assert create_head("lstm", 16, 3, epochs=5, patience=2).schedule(90) == (5, 2)


# ----------------------------------------------------------------------------- what a temporal head is for

def test_vote_cannot_tell_order_apart_and_the_temporal_heads_can(tmp_path):
    """rise and fall hold the same frames in reverse order: chance for vote, easy for an LSTM, a
    temporal convolution or a transformer with positions."""
    assert synthetic_class_names(3) == ["box", "fall", "rise"]
    path = make_synthetic_cache(tmp_path / "order.h5", n_samples=150, embed_dim=24, n_classes=3, mean_frames=24,
                                max_frames=48, noise=1.5, seed=5)
    store = FeatureStore(path)
    train, val, (X, y) = store.load("train"), store.load("val"), store.load("test")
    motion = np.isin(y, [store.class_names.index("rise"), store.class_names.index("fall")])
    acc = {}
    for name in ("vote", "lstm", "tcn", "transformer"):
        head = create_head(name, store.embed_dim, 3).fit(*train, X_val=val[0], y_val=val[1])
        pred = head.predict(X)
        acc[name] = float(np.mean(pred[motion] == y[motion]))
        acc[name + "_box"] = float(np.mean(pred[~motion] == y[~motion]))
    for name in ("lstm", "tcn", "transformer"):
        assert acc[name] >= 0.9 and acc[name + "_box"] == 1.0, acc
    assert acc["vote"] <= 0.75 and acc["vote_box"] == 1.0, acc                      # chance is 0.5
