# Sourced by the training scripts: the precision their runs train in unless PRECISION is set.
# bfloat16 where it is fast (CUDA, or a CPU with AVX512-BF16 or AMX: 1.34x the images per second
# of float32 on the 2-core CPU the shipped models trained on); float32 on other CPUs, where
# bfloat16 is emulated (measured 9.5 against 117 images/s on a 2-core AVX2 EPYC).
fast_precision() {
  local device=$1 python=$2
  if [ "$device" != cpu ]; then echo bf16; return; fi
  $python -c 'from retrieval.devices import cpu_has_native_bf16 as n; print("bf16" if n() else "fp32")'
}
