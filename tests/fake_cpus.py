"""/proc/cpuinfo texts of the kinds of CPU our machines have, for tests of what the project decides per CPU."""

AVX2_EPYC = (
    "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.426\nflags\t\t: fpu sse2 avx avx2 fma\n"
)
BF16_EPYC = AVX2_EPYC.replace("avx2 fma", "avx2 fma avx512f avx512_bf16 avx512_vnni").replace("2445.426", "2600.0")
XEON_AMX = BF16_EPYC.replace("AuthenticAMD", "GenuineIntel").replace("avx512_vnni", "avx512_vnni amx_bf16 amx_int8")
