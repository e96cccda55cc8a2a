"""Which types a model artifact may hold: an exact list, never a prefix, checked before anything is built.

A skops file names every object it holds by module and class, and skops builds only the types it is told
to trust. Trusting by prefix is not safe: ``numpy.`` covers ``numpy.testing._private.utils.runstring``
(an ``exec``), and a scikit-learn ``Pipeline`` of ``FunctionTransformer`` steps built from
``numpy.full_like``, ``numpy.sum`` and ``runstring`` runs any Python text on its first ``predict``. So
every type named in an artifact must be on :data:`BUILT_IN_TYPES` or on the user's own exact list:

* ``ESTEIRA_TRUSTED_TYPES`` (comma-separated or a JSON list of full names, e.g. ``mypkg.model.MyEstimator``);
* the ``esteira.trusted_types`` entry-point group: each entry point loads a list of full names (or a
  function returning one), so a package of custom estimators ships its reviewed list with its code.

An entry that is not a full dotted name (``numpy.``, ``numpy.*``, ``sklearn``) is refused with the place it
came from, so a list cannot be widened by mistake. The check runs when a version is registered and again
when it is loaded, before skops builds a single object.

:data:`BUILT_IN_TYPES` is what esteira's own training produces: every estimator family of
:mod:`flows.estimators` for every task, on numeric and categorical inputs, with the parameters that change
what a fitted model stores (class weights, the gradient-boosting losses, early stopping). A test fits them
all and fails if training ever needs a type that is not listed here.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import skops.io as sio

from registry.errors import UntrustedArtifact

ENTRY_POINT_GROUP = "esteira.trusted_types"

BUILT_IN_TYPES: frozenset[str] = frozenset({
    # containers and the one scalar type skops writes as a node (dict keys of class weights)
    "builtins.dict", "builtins.int", "builtins.list", "builtins.slice", "builtins.str", "builtins.tuple",
    # arrays, their dtypes and scalars, the random generator of histogram gradient boosting
    "numpy.dtype", "numpy.float64", "numpy.int64", "numpy.ndarray", "numpy.random._generator.Generator",
    "numpy.uint64",
    # the pipeline around every candidate (flows.estimators.build_pipeline)
    "sklearn.compose._column_transformer.ColumnTransformer", "sklearn.impute._base.SimpleImputer",
    "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder", "sklearn.preprocessing._label.LabelEncoder",
    # the estimator families
    "sklearn.linear_model._logistic.LogisticRegression", "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier", "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    # what the forests and gradient boosting hold inside
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier", "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # the gradient-boosting losses and their link functions
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.AbsoluteError", "sklearn._loss.loss.PinballLoss",
    "sklearn._loss.loss.HalfGammaLoss", "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyPinballLoss", "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.LogitLink", "sklearn._loss.link.LogLink",
    "sklearn._loss.link.MultinomialLogit", "sklearn._loss.link.Interval",
})
"""Every type esteira's own training writes into a skops artifact (measured; see the module docstring)."""

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def exact_names(entries: Iterable[Any], source: str) -> frozenset[str]:
    """``entries`` as full type names; refuses anything else (a prefix, a wildcard, a bare module)."""
    names = set()
    for entry in entries:
        if not isinstance(entry, str) or not _TYPE_NAME.fullmatch(entry):
            raise UntrustedArtifact(f"{source} lists {entry!r}, which is not a full type name such as "
                                    "'mypackage.models.MyEstimator' (prefixes and wildcards are not accepted)")
        names.add(entry)
    return frozenset(names)


def _entry_point_names() -> frozenset[str]:
    """The names every installed ``esteira.trusted_types`` entry point lists (read afresh: a few ms)."""
    names: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}"
        try:
            loaded: Any = ep.load()
            listed = loaded() if callable(loaded) else loaded
        except Exception as exc:  # noqa: BLE001 - a broken plugin must fail closed, with its name
            raise UntrustedArtifact(f"{source} could not be loaded: {type(exc).__name__}: {exc}") from exc
        if isinstance(listed, str) or not isinstance(listed, Iterable):
            raise UntrustedArtifact(f"{source} must give a list of type names, got {type(listed).__name__}")
        names |= exact_names(listed, source)
    return frozenset(names)


def trusted_types() -> frozenset[str]:
    """The built-in list, plus ``ESTEIRA_TRUSTED_TYPES``, plus the ``esteira.trusted_types`` entry points."""
    from core.settings import get_settings

    configured = exact_names(get_settings().trusted_types, "ESTEIRA_TRUSTED_TYPES")
    return BUILT_IN_TYPES | configured | _entry_point_names()


def types_in(data: bytes) -> set[str]:
    """Every type a skops artifact names, found without building any object."""
    schema_types, skops_untrusted = _read_types(data)
    return schema_types | skops_untrusted


def _read_types(data: bytes) -> tuple[set[str], set[str]]:
    """(every ``module.class`` in the archive's ``schema.json``, skops's own ``get_untrusted_types``).

    The first also sees the types skops trusts by default (every scikit-learn estimator, numpy ufuncs),
    which an exact list must not take on faith: ``FunctionTransformer`` is one of them. Bound methods
    are named ``module.class.method``, as skops names them.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # noqa: BLE001 - whatever cannot be read is not loaded
        raise UntrustedArtifact(f"not a readable skops artifact ({type(exc).__name__}: {exc})") from None
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                found.add(f"{module}.{cls}")
                content = node.get("content")
                if node.get("__loader__") == "MethodNode" and isinstance(content, dict):
                    found.add(f"{module}.{cls}.{content.get('func')}")
            stack.extend(node.values())
    return found, untrusted


def check_skops(data: bytes) -> list[str]:
    """The types to hand skops's ``loads(trusted=...)``, once every type in ``data`` is on the exact list.

    Raises :class:`UntrustedArtifact` naming each type that is not, before any object is built.
    """
    schema_types, untrusted = _read_types(data)
    refused = sorted((schema_types | untrusted) - trusted_types())
    if refused:
        raise UntrustedArtifact(f"artifact holds types outside the trusted list: {', '.join(refused)} "
                                "(add exact names to ESTEIRA_TRUSTED_TYPES or an esteira.trusted_types entry "
                                "point only after reviewing them)")
    return sorted(untrusted)
