"""The walkthrough's eight experiments, E1-E8, and the addendum E4C (E4 with gradient clipping),
told right after E4: one module each, holding its run, its story and its figure.

    from fastgrad import walkthrough
    ex = walkthrough.e4()                 # run E4: an Experiment (results, data, facts)
    ex.facts.steps, ex.results["run"]     # the figures its story prints, the fit results
    walkthrough.MODULES["E4"].tell(ex)    # the story ``fastgrad demo`` prints, as lines
    walkthrough.MODULES["E4"].figure(ex)  # its figure (needs matplotlib)

Every experiment runs on fastgrad alone, except E2, which replays E1 in TensorFlow (the ``tf``
extra).  Each module ``fastgrad.walkthrough.e1`` ... ``e8`` and ``e4c`` has:

    ID, TITLE, SUMMARY   "E4", the title of its story, a line for ``fastgrad demo --help``
    run(...)             runs it: an :class:`Experiment` whose ``facts`` are the module's own dataclass
    tell(ex)             the story, as lines of text
    figure(ex)           a matplotlib Figure of its runs
    IS_TF_REPLAY         (E2 only) the experiment is itself a replay in TensorFlow

``e1`` ... ``e8`` and ``e4c`` here are the modules' ``run`` functions.  The tests,
``examples/walkthrough.py`` and ``fastgrad demo`` all call them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict, List, Sequence, Union

from . import e1 as _e1
from . import e2 as _e2
from . import e3 as _e3
from . import e4 as _e4
from . import e4c as _e4c
from . import e5 as _e5
from . import e6 as _e6
from . import e7 as _e7
from . import e8 as _e8
from ._base import Experiment, max_deviation

__all__ = ["Experiment", "MODULES", "EXPERIMENTS", "run", "max_deviation",
           "e1", "e2", "e3", "e4", "e4c", "e5", "e6", "e7", "e8"]

#: each experiment's module, by id, in the walkthrough's order (E4C, the clipping addendum, after E4);
#: ids are upper case, as ``run`` and ``fastgrad demo`` look them up
MODULES: Dict[str, ModuleType] = {m.ID: m for m in (_e1, _e2, _e3, _e4, _e4c, _e5, _e6, _e7, _e8)}
#: each experiment's run function, by id
EXPERIMENTS: Dict[str, Callable[..., Experiment[Any]]] = {eid: m.run for eid, m in MODULES.items()}

# the run functions under the experiments' names (so these names hold functions, not the modules)
e1 = _e1.run
e2 = _e2.run
e3 = _e3.run
e4 = _e4.run
e4c = _e4c.run
e5 = _e5.run
e6 = _e6.run
e7 = _e7.run
e8 = _e8.run


def run(ids: Union[str, Sequence[str], None] = None) -> List[Experiment[Any]]:
    """Run the experiments named in ``ids`` (all by default; one name may be given as a string), in order."""
    if isinstance(ids, str):
        ids = [ids]
    names = list(EXPERIMENTS) if ids is None else list(ids)
    for i in names:
        if not isinstance(i, str):
            raise TypeError(f"ids: expected experiment names such as 'E4', got {i!r}")
        if i.upper() not in EXPERIMENTS:
            raise ValueError(f"ids: unknown experiment {i!r}; expected some of {list(EXPERIMENTS)}")
    return [EXPERIMENTS[i.upper()]() for i in names]
