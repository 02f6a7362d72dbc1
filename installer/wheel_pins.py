"""The exact pyzmq and msgpack wheels the installer may vendor into an editor, pinned by hash.

The installer unpacks these into a folder the editor executes code from, so a wheel that is not
byte-for-byte one of these -- a tampered cache, an index serving something else -- is refused.
The table covers the editor Pythons Touchup supports (Krita 5.2 embeds 3.10 on Windows and
macOS; Linux editors use the system's 3.10-3.14, 3.14 for Krita 6 and GIMP 3.2 on current
Debian; pyzmq's abi3 wheels serve 3.12 and later). To support another platform, add its wheels'
names and sha256 from PyPI here, in the same release.
"""

from __future__ import annotations

#: Requirement pins passed to ``pip download`` (one release of each).
PINNED_VERSIONS = {"pyzmq": "27.3.0", "msgpack": "1.2.4"}

#: Wheel file name -> sha256, as published on PyPI for the pinned releases.
WHEEL_SHA256: dict[str, str] = {
    "msgpack-1.2.4-cp310-cp310-macosx_10_9_x86_64.whl": "2a4e141a9c91d1502cf98f9ca9f87af222c7857e2bfa49c1d81343157c38a28e",
    "msgpack-1.2.4-cp310-cp310-macosx_11_0_arm64.whl": "0626ea840cce866237c4da08439e9faa9cf79e6e4c62358978ee055961e8cff2",
    "msgpack-1.2.4-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": "85b79ed643cfde70672152b3d1aee438ca647c5d2ffb7dba7226689ee9f6f44b",
    "msgpack-1.2.4-cp310-cp310-win_amd64.whl": "d626fcacecaf3a5bfcd57e35709ce59a56a39cd4a3cd201d1b43c00d20bcbcda",
    "msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": "a45ceb5f199d5e388f28b550ba881096a3740d4bda10e661d77f59d9a2e8187a",
    "msgpack-1.2.4-cp311-cp311-win_amd64.whl": "9db832747bd05834530189e564a3fe31e2617547dc1f3a005f835eafc2b8e048",
    "msgpack-1.2.4-cp312-cp312-macosx_11_0_arm64.whl": "112933726919f4239646cca9572e2c2fa5626358c670da8440aac09403100a48",
    "msgpack-1.2.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": "c4d5bbdbea8f5669b3a734d6c226772804fb120848f99cbe63a0ddee63b049c9",
    "msgpack-1.2.4-cp312-cp312-win_amd64.whl": "6e38b123681df22373d545520f54bbeddc4706d9235a1161061f12bd6648497d",
    "msgpack-1.2.4-cp313-cp313-macosx_11_0_arm64.whl": "36258fd0909e1bf26e94604439108846432abe4ffa9a23c9dc2f6f1c60f94b60",
    "msgpack-1.2.4-cp313-cp313-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl": "e9c5ba0f053a7e98f013f083c9d1b2dffb26cad8c897c533d8286e44ed24c669",
    "msgpack-1.2.4-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": "7fabd415c41e62006c6641fcdf5b3e866f581c4e11c58328c0d0f69584b9577d",
    "msgpack-1.2.4-cp313-cp313-win_amd64.whl": "318d4e634d2b320be10decd9968ad1ae0be1d80cba23b5528c37b429eeb0e3e0",
    "msgpack-1.2.4-cp314-cp314-macosx_11_0_arm64.whl": "c97f5f17407e1761f23f1944be33cbf1d5ce67017db32544dcd5e16e0b1b4a3b",
    "msgpack-1.2.4-cp314-cp314-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl": "2444a4e04f924630d059ae6eae8f91fdfcd28ed9fd17b21bacf4e74550a091f7",
    "msgpack-1.2.4-cp314-cp314-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": "5d65b791ce4283e02b6267742ad540899155e1b32887b9cbdda47f38f5a076b5",
    "msgpack-1.2.4-cp314-cp314-win_amd64.whl": "80f5d4fda1ba373d95933f98e6c1d18247feffac839fda3930bdd85e6561bb5f",
    "pyzmq-27.3.0-cp310-cp310-macosx_10_15_universal2.whl": "de47ad29f7fed1a466e0ef34b13ca307cf24aba77c0a21c87e6cae649ad29669",
    "pyzmq-27.3.0-cp310-cp310-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl": "e84d88c42ac2ea32314aaa9ef879da16c372ebfb8ad6f2ce1953d88538b44831",
    "pyzmq-27.3.0-cp310-cp310-win_amd64.whl": "d968d0c2bd7a35c73d62b32fba05e8c2061a6614870e8ec132a6667bc72f24e9",
    "pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl": "477b8ad30d66fc905c5388351e83b9ac25824b00e82c0d052b72ea6392636dfd",
    "pyzmq-27.3.0-cp311-cp311-win_amd64.whl": "df98c790f86b6aa2378b4bb94dec7b85b0adb195b880b41e429a4990aed2a8c9",
    "pyzmq-27.3.0-cp312-abi3-macosx_10_15_universal2.whl": "15155fd8f308d3bd47f67a8f6cc809f9db90abbf63c514c384a17622e2cf080f",
    "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_aarch64.manylinux_2_28_aarch64.whl": "ad8b828407caee77ff3ab0bdb2984ee8d48922328b226e8fda7c84a71a55dbb4",
    "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl": "858fe25231e0fd8612da142efde019faa5ef63fa150a821a27870e791b38c798",
    "pyzmq-27.3.0-cp312-abi3-win_amd64.whl": "3ea8e8fa5c097e68fef91d70b150fda96f307758103868018fc4deeb9c214122",
}
