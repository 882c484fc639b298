"""Local emulators of the providers' services, for tests and the offline demo.

HTTP emulators (`NseEmulator`, `TrendlyneEmulator`) run on 127.0.0.1 with an ephemeral port:

    with NseEmulator() as nse:
        provider = NseOptionsProvider(base_url=nse.base_url)
        nse.set_fault("block", "v3", times=1)
"""

from providers.emulators.http_server import EmulatorServer, Fault, HttpEmulator, LoggedRequest
from providers.emulators.nse import NseEmulator
from providers.emulators.trendlyne import TrendlyneEmulator

__all__ = [
    "EmulatorServer",
    "Fault",
    "HttpEmulator",
    "LoggedRequest",
    "NseEmulator",
    "TrendlyneEmulator",
]
