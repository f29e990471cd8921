"""The flow parameters (HarvestSpec, SweepSpec, DiffSpec, the demos' specs), free of Prefect, torch and Ray.

The CLI builds and validates specs without importing any of them (a spec error is reported in
milliseconds, not after a ~10 s import), and every rule that needs no file, model or network
lives here as a pydantic constraint or validator, so the Prefect UI's forms reject the same
values. Checks that read files or the environment are in flows.preflight.
One module per flow (fields.py: the types and checks they share); this package re-exports them all,
and flows.harvest / flows.sweep / flows.diff re-export their own.
"""

from __future__ import annotations

from flows.specs.analysis import AblationMode as AblationMode
from flows.specs.analysis import FeaturesSpec as FeaturesSpec
from flows.specs.analysis import FiniteFloat as FiniteFloat
from flows.specs.analysis import SteerSpec as SteerSpec
from flows.specs.demo import DemoSpec as DemoSpec
from flows.specs.demo import SyntheticDemoSpec as SyntheticDemoSpec
from flows.specs.diff import DiffSpec as DiffSpec
from flows.specs.fields import ARCHITECTURES as ARCHITECTURES
from flows.specs.fields import Architecture as Architecture
from flows.specs.fields import NonNegativeFloat as NonNegativeFloat
from flows.specs.fields import PositiveFloat as PositiveFloat
from flows.specs.fields import PositiveInt as PositiveInt
from flows.specs.fields import RayAddress as RayAddress
from flows.specs.fields import StorageRoot as StorageRoot
from flows.specs.fields import StorageSecret as StorageSecret
from flows.specs.fields import WandbMode as WandbMode
from flows.specs.fields import WandbModeSetting as WandbModeSetting
from flows.specs.fields import check_hookpoint as check_hookpoint
from flows.specs.fields import check_hookpoints as check_hookpoints
from flows.specs.fields import check_order as check_order
from flows.specs.harvest import HarvestSpec as HarvestSpec
from flows.specs.sweep import SweepSpec as SweepSpec
