"""unbroken: live streaming over WebRTC (WHIP/WHEP) whose streams restore themselves."""

__version__ = "0.1.0"
