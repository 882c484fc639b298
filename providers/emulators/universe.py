"""The emulated F&O universe: every underlying the NSE and Trendlyne emulators list.

NSE lists options on five indices and about 210 stocks (a 2026 capture of
`/api/underlying-information`: 5 and 210). The indices are written out; the stocks come from a
compact table of real NSE F&O trading symbols with a rough price level, and the rest of each
stock's contract terms is derived from those two, deterministically:

- strike step by price level, like NSE's (2.5 for a ~200 stock, 20 for a ~1,500 one, ...);
- strikes per expiry 30-80, seeded from the symbol (stock chains are shorter than an index's),
  fewer for a penny stock, whose strikes must stay above zero;
- a lot size that puts one contract near Rs 7.5 lakh, rounded the way NSE's lots are;
- a Trendlyne `stock_id` from the stock's place in the table (append new symbols at the end
  so the ids of the others stay put; the ids are ours, Trendlyne's real ones are unknown).

Prices are rough late-2025 levels: the chains need strikes around the money, not a quote.
Imports nothing of the other emulator modules, so the price path and the chains both read it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

#: What a contract of a stock is worth, roughly (NSE sizes lots to a minimum contract value).
_CONTRACT_VALUE = 750_000.0
#: The first Trendlyne id of a derived stock; above every hand-written id below.
_FIRST_STOCK_ID = 5_000


@dataclass(frozen=True)
class UnderlyingSpec:
    symbol: str
    spot: float
    step: float
    strikes: int
    kind: Literal["Indices", "Equity"]
    weekly: bool
    stock_id: int  # Trendlyne's id
    lot_size: int
    #: The display name `/api/underlying-information` sends ("underlying"); None: derived.
    name: str | None = None

    @property
    def display_name(self) -> str:
        if self.name is not None:
            return self.name
        return f"{self.symbol} Limited"


#: The written-out entries (indices, and the stocks tests have long relied on): their values,
#: stock ids included, must not change.
_FIXED: tuple[UnderlyingSpec, ...] = (
    UnderlyingSpec("NIFTY", 25_800.0, 50.0, 100, "Indices", True, 1887, 75, "NIFTY 50"),
    UnderlyingSpec("BANKNIFTY", 57_000.0, 100.0, 90, "Indices", False, 1898, 35, "NIFTY BANK"),
    UnderlyingSpec(
        "FINNIFTY", 27_300.0, 50.0, 84, "Indices", False, 1900, 65, "NIFTY FINANCIAL SERVICES"
    ),
    UnderlyingSpec(
        "MIDCPNIFTY", 13_400.0, 25.0, 84, "Indices", False, 1902, 140, "NIFTY MIDCAP SELECT"
    ),
    UnderlyingSpec("NIFTYNXT50", 68_000.0, 100.0, 80, "Indices", False, 1904, 25, "NIFTY NEXT 50"),
    UnderlyingSpec(
        "RELIANCE", 1_520.0, 10.0, 84, "Equity", False, 1127, 500, "Reliance Industries Limited"
    ),
    UnderlyingSpec(
        "M&M", 3_650.0, 25.0, 84, "Equity", False, 1260, 200, "Mahindra & Mahindra Limited"
    ),
)

#: Real NSE F&O stock symbols with a rough price level, "SYMBOL PRICE" per entry. Append only
#: (the order gives the Trendlyne ids).
_STOCKS = """
HDFCBANK 990 ICICIBANK 1400 INFY 1550 TCS 3100 SBIN 900 BHARTIARTL 2000 ITC 410
HINDUNILVR 2450 LT 3900 KOTAKBANK 2100 AXISBANK 1200 BAJFINANCE 1000 BAJAJFINSV 2050
BAJAJ-AUTO 8900 MARUTI 16000 TATASTEEL 170 SUNPHARMA 1700 NTPC 340 POWERGRID 290 ONGC 245
COALINDIA 390 ASIANPAINT 2500 ULTRACEMCO 12000 TITAN 3600 NESTLEIND 1250 WIPRO 250
HCLTECH 1500 TECHM 1450 ADANIENT 2400 ADANIPORTS 1450 JSWSTEEL 1150 HINDALCO 780
GRASIM 2800 DRREDDY 1250 CIPLA 1550 DIVISLAB 6500 APOLLOHOSP 7500 EICHERMOT 7000
HEROMOTOCO 5500 BRITANNIA 6000 TATACONSUM 1150 INDUSINDBK 750 SBILIFE 1900 HDFCLIFE 760
BPCL 340 SHRIRAMFIN 650 TRENT 4700 BEL 410 HAL 4700 ETERNAL 320 JIOFIN 310 DMART 4200
PIDILITIND 1500 SIEMENS 3200 ABB 5200 DLF 770 GODREJPROP 2200 LODHA 1200 OBEROIRLTY 1700
PRESTIGE 1650 PHOENIXLTD 1650 TVSMOTOR 3500 ASHOKLEY 140 BHARATFORG 1300 BOSCHLTD 38000
MOTHERSON 100 EXIDEIND 390 TIINDIA 3000 SONACOMS 480 UNOMINDA 1250 TATAPOWER 400
ADANIGREEN 1000 ADANIENSOL 900 NHPC 80 JSWENERGY 520 TORNTPOWER 1300 CESC 170 PFC 400
RECLTD 380 IRFC 125 IREDA 150 HUDCO 230 LICHSGFIN 580 CANBK 130 BANKBARODA 270 PNB 115
UNIONBANK 140 INDIANB 850 BANKINDIA 130 IDFCFIRSTB 75 FEDERALBNK 230 AUBANK 800
BANDHANBNK 165 RBLBANK 300 YESBANK 22 IDEA 9 HFCL 75 CHOLAFIN 1650 MUTHOOTFIN 3200
MANAPPURAM 280 LTF 260 M&MFIN 280 PEL 1150 POONAWALLA 480 SBICARD 880 ICICIGI 1950
ICICIPRULI 620 HDFCAMC 5500 MAXHEALTH 1150 LICI 900 ANGELONE 2400 CDSL 1550 BSE 2400
MCX 9000 CAMS 3800 KFINTECH 1100 IEX 140 NUVAMA 7000 360ONE 1100 PAYTM 1250 POLICYBZR 1800
NYKAA 250 NAUKRI 1400 DELHIVERY 450 IRCTC 720 INDIGO 5700 CONCOR 560 ABCAPITAL 300
LTIM 5800 PERSISTENT 6000 COFORGE 1800 MPHASIS 2800 OFSS 8800 KPITTECH 1250 TATAELXSI 5500
TATATECH 700 LTTS 4400 DIXON 15000 POLYCAB 7300 KEI 4000 HAVELLS 1500 VOLTAS 1350
BLUESTARCO 1850 CROMPTON 300 AMBER 7500 KAYNES 6500 PGEL 600 CGPOWER 700 SUZLON 55
INOXWIND 150 BHEL 250 CUMMINSIND 4000 SUPREMEIND 4000 APLAPOLLO 1750 ASTRAL 1400
JINDALSTEL 1000 SAIL 130 NMDC 75 VEDL 500 NATIONALUM 230 HINDZINC 480 HINDCOPPER 320
BALKRISIND 2400 UPL 700 PIIND 3600 DABUR 500 MARICO 720 COLPAL 2200 GODREJCP 1150
UNITDSPR 1350 VBL 470 PAGEIND 42000 JUBLFOOD 600 KALYANKJIL 480 SWIGGY 400 PATANJALI 600
INDHOTEL 750 LUPIN 2000 AUROPHARMA 1200 ZYDUSLIFE 950 ALKEM 5600 TORNTPHARM 3600
MANKIND 2400 GLENMARK 1900 BIOCON 370 LAURUSLABS 950 FORTIS 950 GAIL 180 IOC 150
HINDPETRO 450 PETRONET 280 OIL 420 GMRAIRPORT 90 AMBUJACEM 570 SHREECEM 27000 DALBHARAT 2200
INDUSTOWER 400 MAZDOCK 2800 BDL 1500 SOLARINDS 14000 NBCC 115 RVNL 340 SRF 2900
PNBHOUSING 900 MFSL 1550 WAAREEENER 3300 PREMIERENE 1000 IGL 210 SAMMAANCAP 150 IIFL 480
"""

#: NSE's strike interval by price level: (below this price, step).
_STEPS: tuple[tuple[float, float], ...] = (
    (50, 0.5),
    (120, 1.0),
    (250, 2.5),
    (500, 5.0),
    (1_000, 10.0),
    (2_500, 20.0),
    (5_000, 50.0),
    (10_000, 100.0),
    (20_000, 250.0),
)


def strike_step(price: float) -> float:
    """The strike interval of a stock trading near `price`."""
    for below, step in _STEPS:
        if price < below:
            return step
    return 500.0


def lot_size(price: float) -> int:
    """Shares per contract: near `_CONTRACT_VALUE`, in 25s above 100 shares, else 5s (min 5)."""
    raw = _CONTRACT_VALUE / price
    unit = 25 if raw >= 100 else 5
    return max(unit, round(raw / unit) * unit)


def strike_count(symbol: str, price: float, step: float) -> int:
    """Strikes per expiry, 30-80, stable per symbol (real stock chains vary that much), but
    never reaching below 40% of the price: a penny stock's chain is short (IDEA's ~20)."""
    digest = hashlib.blake2b(f"strikes|{symbol}".encode(), digest_size=4).digest()
    wanted = 30 + int.from_bytes(digest, "big") % 51
    return min(wanted, 2 * int(0.6 * price / step) + 1)


def _stock_specs() -> list[UnderlyingSpec]:
    words = _STOCKS.split()
    pairs = list(zip(words[::2], words[1::2], strict=True))
    return [
        UnderlyingSpec(
            symbol,
            float(price),
            strike_step(float(price)),
            strike_count(symbol, float(price), strike_step(float(price))),
            "Equity",
            False,
            _FIRST_STOCK_ID + index,
            lot_size(float(price)),
        )
        for index, (symbol, price) in enumerate(pairs)
    ]


def _universe() -> dict[str, UnderlyingSpec]:
    table: dict[str, UnderlyingSpec] = {}
    for spec in (*_FIXED, *_stock_specs()):
        if spec.symbol in table:
            raise ValueError(f"{spec.symbol} is listed twice in the emulated universe")
        table[spec.symbol] = spec
    ids = [spec.stock_id for spec in table.values()]
    if len(set(ids)) != len(ids):
        raise ValueError("two emulated underlyings share a Trendlyne stock_id")
    return table


#: Every underlying, indices first, each in its table's order (the order NSE's lists use here).
UNDERLYINGS: dict[str, UnderlyingSpec] = _universe()
