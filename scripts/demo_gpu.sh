#!/usr/bin/env bash
# The DeepSeek V4 demo on every GPU of the machine, pro preset, decode-like token counts.
set -u
NG=$(nvidia-smi -L | wc -l)
TOKENS=$([ "$NG" -ge 4 ] && echo 1,8,0,32 || echo 1,8)
[ "$NG" -ge 4 ] && NG=4
for mode in fused fused_combine reference scatter; do
  echo "### --combine $mode"
  torchrun --nproc-per-node "$NG" -m deepseek_v4 --tokens "$TOKENS" --combine "$mode" --preset pro 2>&1 | grep -v "^W11\|OMP_NUM\|^\*\*\*\|FutureWarning\|enable_symm_mem"
  echo "exit code: ${PIPESTATUS[0]}"
done
