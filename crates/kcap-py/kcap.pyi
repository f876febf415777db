"""kcap — a fast simulator of the assembly calculus (NEMO).

``import kcap as brain`` runs scripts written for the reference ``brain.py``
(``Brain``, ``add_stimulus``, ``add_area``, ``project``, ``area_by_name``);
kcap's own API adds the operations as single calls, overlap measures, NumPy
results, ``run(experiment_file)``, checkpoints (``Brain.save``,
``kcap.load``, pickling) and the device (``Brain(p, device="cuda")``,
``brain.to("cuda:1")``). See docs/python.md.
"""

import os
from typing import Any, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, SupportsIndex, Tuple, TypeVar, Union

import numpy as np
import numpy.typing as npt

__version__: str

#: Device kinds of ``Brain(device=...)``: ``"cpu"``, ``"cuda"`` (also ``"cuda:N"``: GPU N).
DEVICES: list[str]
#: Values of ``add_area(engine=...)``: ``"lazy"``, ``"explicit"``, ``"procedural"``.
ENGINES: list[str]
#: The engines this build implements (the others raise NotAvailableError).
AVAILABLE_ENGINES: list[str]

Names = Union[str, Iterable[str]]
NeuronIds = Union[Iterable[SupportsIndex], npt.NDArray[np.integer[Any]]]
#: Sorted neuron ids: ``uint64`` for procedural areas (n up to 10¹²), else ``uint32``.
WinnersArray = npt.NDArray[Union[np.uint32, np.uint64]]
WeightsName = Literal["f32", "f16", "bf16", "log-u8", "bit", "auto"]
IndicesName = Literal["u32", "u16"]
LayoutName = Literal["csr", "bitmap"]
RoundingName = Literal["nearest", "stochastic"]
AccumulatorName = Literal["f32", "fixed"]
PathLike = Union[str, os.PathLike[str]]
#: ``"cpu"``, ``"cuda"`` (GPU 0) or ``"cuda:N"`` (GPU N).
DeviceName = str
_B = TypeVar("_B", bound="Brain")

# ----- exceptions -------------------------------------------------------------

class KcapError(Exception):
    """Base class of every error raised by kcap."""

class UnknownNameError(KcapError, KeyError, IndexError):
    """An area or stimulus name the brain does not know (also KeyError and IndexError)."""

class NoAssemblyError(KcapError, ValueError):
    """Projecting from (or fixing) an area that has no winners yet."""

class AreaTooSmallError(KcapError, RuntimeError):
    """A lazy area has too few never-fired neurons left to sample k new winners."""

class InvalidParameterError(KcapError, ValueError):
    """A parameter outside its range, an unknown engine/device/format name, a duplicate name."""

class CheckpointError(KcapError, ValueError):
    """A checkpoint (file or pickle) that is not one, is truncated or corrupt, or comes from a newer kcap."""

class NotAvailableError(KcapError, NotImplementedError):
    """A feature that exists in the API but not in this build or combination (an engine, a format,
    a procedural area firing into a lazy one)."""

class DeviceError(KcapError, RuntimeError):
    """A device that cannot be opened (no NVIDIA driver or GPU, no such GPU number, NVRTC missing);
    the message is the CLI's: ``device cuda:0: no CUDA driver/device found: ...``."""

# ----- brain ------------------------------------------------------------------

class Brain:
    """A simulated brain: areas of n neurons of which k fire per step, stimuli,
    random connectivity of probability p and Hebbian plasticity.

    Drop-in for the reference ``brain.Brain``. Subclass it freely; a
    subclass's ``__init__`` must call ``Brain.__init__(self, p, ...)``.
    """

    def __init__(
        self,
        p: float,
        save_size: bool = True,
        save_winners: bool = False,
        seed: Optional[int] = 0,
        device: DeviceName = "cpu",
        *,
        w_max: Optional[float] = None,
        tail: Literal["normal", "exact"] = "normal",
    ) -> None:
        """``p``: connection probability in (0, 1]. ``save_size`` /
        ``save_winners``: record each target area's support / winners after
        every step. ``seed``: the run is a function of it (``None``: from the
        clock). ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (the same
        winners on every device); an unknown name raises ValueError
        (InvalidParameterError), a GPU that cannot be opened DeviceError.
        ``w_max``: cap on every weight. ``tail``: how the
        top-k inputs of never-fired neurons are sampled."""

    # reference attributes
    @property
    def p(self) -> float: ...
    save_size: bool
    save_winners: bool
    disable_plasticity: bool
    @property
    def area_by_name(self) -> AreaMap:
        """Live mapping ``{name: Area}``."""
    @property
    def areas(self) -> AreaMap:
        """Older name of ``area_by_name``."""
    @property
    def stimulus_size_by_name(self) -> dict[str, int]:
        """``{stimulus name: size}`` (a new dict on each access)."""

    # reference methods
    def add_stimulus(self, stimulus_name: str, size: int) -> None:
        """A stimulus of ``size`` neurons that all fire when it is projected."""
    def add_area(
        self,
        area_name: str,
        n: Union[int, float],
        k: int,
        beta: float,
        *,
        engine: Literal["lazy", "explicit", "procedural"] = "lazy",
        weights: Optional[WeightsName] = None,
        indices: Optional[IndicesName] = None,
        layout: Optional[LayoutName] = None,
        rounding: Optional[RoundingName] = None,
        accumulator: Optional[AccumulatorName] = None,
    ) -> None:
        """An area of ``n`` neurons, ``k`` winners per step, default
        plasticity ``beta``. ``engine="procedural"``: synapses regenerated
        on demand (n up to 10¹², uint64 winner arrays); it may take input
        from any area but fire only into procedural ones. Storage formats
        (as in ``set_fiber_format``) apply to the fibers an explicit area
        creates with the areas that exist, and raise ValueError for other
        engines. Unknown engine/format
        values raise InvalidParameterError (ValueError) listing the accepted
        ones; known ones not in this build raise NotAvailableError."""
    def set_fiber_format(
        self,
        source: str,
        area: str,
        *,
        weights: Optional[WeightsName] = None,
        indices: Optional[IndicesName] = None,
        layout: Optional[LayoutName] = None,
        rounding: Optional[RoundingName] = None,
        accumulator: Optional[AccumulatorName] = None,
    ) -> None:
        """Storage format of the fiber ``source → area`` between two explicit
        areas; parts not given are the reference's (f32/u32/csr/nearest/f32),
        ``weights="auto"`` alone lets the planner choose. Rebuilds the fiber
        (same synapses); before the first step only (RuntimeError after).
        Unknown names: UnknownNameError; a stimulus or lazy area, a bad value
        or combination: InvalidParameterError."""
    def memory_report(self) -> List[Dict[str, Any]]:
        """Per stored fiber: from, to, format, synapses, bytes,
        predicted_bytes, reference_bytes, reasons."""
    def add_explicit_area(
        self,
        area_name: str,
        n: Union[int, float],
        k: int,
        beta: float,
        custom_inner_p: Optional[float] = None,
        custom_out_p: Optional[float] = None,
        custom_in_p: Optional[float] = None,
    ) -> None:
        """An explicit (stored-connectivity) area; raises NotAvailableError
        until the explicit engine lands."""
    def update_plasticity(self, from_area: str, to_area: str, new_beta: float) -> None:
        """Plasticity of the synapses from ``from_area`` into ``to_area``."""
    def update_plasticities(
        self,
        area_update_map: Optional[Mapping[str, Iterable[Tuple[str, float]]]] = None,
        stim_update_map: Optional[Mapping[str, Iterable[Tuple[str, float]]]] = None,
    ) -> None:
        """``area_update_map = {to_area: [(from_area, beta), ...]}``,
        ``stim_update_map = {to_area: [(stimulus, beta), ...]}``."""
    def activate(self, area_name: str, index: int) -> None:
        """Winners become neurons ``[index*k, (index+1)*k)``; the area is fixed."""
    def project(
        self,
        areas_by_stim: Mapping[str, Names],
        dst_areas_by_src_area: Mapping[str, Names],
        verbose: int = 0,
    ) -> None:
        """One synchronous step, e.g. ``project({"stim": ["A"]}, {"A": ["A", "B"]})``."""

    # kcap's own API
    def winners(self, area: str) -> WinnersArray:
        """Current winners (sorted ids) as a NumPy array: uint64 for a
        procedural area, else uint32."""
    def set_winners(self, area: str, winners: NeuronIds) -> None:
        """Replaces the winners by at most k ids: in a lazy area neurons that
        have fired before, in an explicit or procedural area any id below n."""
    def support(self, area: str) -> int:
        """How many neurons of the area have ever fired."""
    def history(self, area: str) -> dict[str, npt.NDArray[np.uint64]]:
        """``{"step", "support", "first_winners"}``, one entry per step into the area."""
    def winner_history(self, area: str) -> list[WinnersArray]:
        """Recorded winner sets (one array per recorded step)."""
    def record_winners(self, area: str, on: bool = True) -> None: ...
    def fix(self, area: str) -> None: ...
    def unfix(self, area: str) -> None: ...
    def subsample_winners(self, area: str, count: int) -> None:
        """Keeps a seeded-random subset of ``count`` current winners."""
    def set_fiber_p(self, source: str, area: str, p: float) -> None:
        """Connection probability of one fiber (before the first step only)."""
    def set_beta(self, source: str, area: str, beta: float) -> None: ...
    def set_area_beta(self, area: str, beta: float) -> None: ...
    plasticity: bool
    w_max: Optional[float]
    @property
    def seed(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def device(self) -> str:
        """The device doing the work: ``"cpu"`` or ``"cuda:N"`` (``"cuda"`` reads as ``"cuda:0"``)."""
    @property
    def backend(self) -> str:
        """Name of the backend doing the work (the same as ``device``)."""
    def to(self: _B, device: DeviceName) -> _B:
        """Moves the brain onto ``device`` and returns it (the same object); later steps give the
        same winners on any device. ValueError for an unknown name, DeviceError (the brain stays
        where it was) for a device that cannot be opened."""
    def area_names(self) -> list[str]: ...
    def stimulus_names(self) -> list[str]: ...
    def memory(self) -> dict[str, int]:
        """``{"area_synapses", "stimulus_entries", "bytes"}`` of stored connectivity."""
    def area(self, name: str) -> Area:
        """Same as ``area_by_name[name]``."""

    # checkpoints and pickling
    def save(self, path: PathLike) -> None:
        """Saves the complete state atomically to a kcap checkpoint file
        (OSError subclasses for file-system errors)."""
    @classmethod
    def load(cls: type[_B], path: PathLike, device: DeviceName = "cpu") -> _B:
        """A brain saved by ``save`` (or a CLI checkpoint), continuing exactly
        as the saved one, on ``device`` (the CPU unless given: checkpoints do
        not record the device); on a subclass, an instance of it
        (``__init__`` not run). FileNotFoundError for a missing file,
        CheckpointError for a corrupt, truncated or newer-format one,
        DeviceError for a device that cannot be opened."""
    def __getstate__(self) -> Tuple[bytes, Dict[str, Any]]:
        """Pickle state: (checkpoint bytes, instance ``__dict__``)."""
    def __setstate__(self, state: Tuple[bytes, Dict[str, Any]]) -> None:
        """Restores a pickled brain onto the CPU (``to(device)`` moves it)."""
    def __reduce__(self) -> Tuple[Any, ...]: ...

def load(path: PathLike, device: DeviceName = "cpu") -> Brain:
    """Same as ``Brain.load(path, device)``."""

class AreaMap(Mapping[str, "Area"]):
    """Read-only live mapping ``{area name: Area}`` of a brain."""

    def __getitem__(self, name: str) -> Area: ...
    def __contains__(self, name: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...

class Area:
    """Live view of one area (the reference ``Area``'s attributes).

    Reads go to the simulation; assigning ``winners``, ``fixed_assembly`` or
    ``beta`` changes it."""

    @property
    def name(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def k(self) -> int: ...
    beta: float
    @property
    def w(self) -> int:
        """Support: neurons of the area that ever fired."""
    @property
    def winners(self) -> list[int]:
        """Current winners; assign any iterable of ids of neurons that fired before."""
    @winners.setter
    def winners(self, value: NeuronIds) -> None: ...
    @property
    def saved_w(self) -> list[int]: ...
    @property
    def saved_winners(self) -> list[list[int]]: ...
    @property
    def num_first_winners(self) -> int: ...
    fixed_assembly: bool
    @property
    def explicit(self) -> bool: ...
    @property
    def engine(self) -> str: ...
    @property
    def beta_by_stimulus(self) -> dict[str, float]: ...
    @property
    def beta_by_area(self) -> dict[str, float]: ...
    @property
    def stimulus_beta(self) -> dict[str, float]:
        """Older name of ``beta_by_stimulus``."""
    @property
    def area_beta(self) -> dict[str, float]:
        """Older name of ``beta_by_area``."""
    def fix_assembly(self) -> None:
        """Freezes the current winners; NoAssemblyError (ValueError) if there are none."""
    def unfix_assembly(self) -> None: ...
    def update_area_beta(self, name: str, new_beta: float) -> None: ...
    def update_beta_by_stimulus(self, name: str, new_beta: float) -> None: ...
    def get_num_ever_fired(self) -> int: ...
    def winners_array(self) -> WinnersArray: ...

# ----- operations (one Rust call each) ---------------------------------------

def project_rounds(brain: Brain, stim: str, area: str, rounds: int = 25) -> WinnersArray:
    """One step ``stim → area``, then ``rounds - 1`` steps ``stim → area, area → area``."""

def reciprocal_project(brain: Brain, stim: str, a: str, b: str, rounds: int = 25) -> WinnersArray:
    """``stim → a``, ``a → {a, b}``, ``b → {a, b}`` for ``rounds`` steps; winners of ``b``."""

def associate(brain: Brain, first: Tuple[str, str], second: Tuple[str, str], c: str, rounds: int = 10) -> None:
    """Both (stimulus, area) pairs fire together into ``c`` for ``rounds`` steps."""

def merge(brain: Brain, first: Tuple[str, str], second: Tuple[str, str], c: str, rounds: int = 49) -> WinnersArray:
    """The reference merge schedule (2 + rounds steps); winners of ``c``."""

def pattern_completion(brain: Brain, area: str, fraction: float = 0.5, rounds: int = 5) -> int:
    """Fires a seeded-random ``fraction`` of the assembly into the area; returns how many of it are recovered."""

def overlap(a: NeuronIds, b: NeuronIds) -> int:
    """Number of neurons two winner sets share."""

def best_match(winners: NeuronIds, assemblies: Iterable[NeuronIds]) -> Optional[Tuple[int, int]]:
    """``(index, overlap)`` of the best-matching assembly; ``None`` for none."""

def run(
    experiment_file: Union[str, os.PathLike[str]],
    out: Optional[Union[str, os.PathLike[str]]] = None,
    threads: Optional[int] = None,
    kcap_bin: Optional[Union[str, os.PathLike[str]]] = None,
) -> dict[str, Any]:
    """Runs ``kcap run FILE`` (the command-line tool) and returns its results.json."""
