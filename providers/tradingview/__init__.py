"""TradingView: a pure protocol codec (`codec`, `symbols`, `quotes`, `bars`) and the providers
built on it (`historical`). The WebSocket emulator lives in `providers.emulators.tradingview`."""
