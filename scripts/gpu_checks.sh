#!/usr/bin/env bash
# One device session on a lent multi-GPU machine: GPU tests, fuzzing, benchmarks, logs under $OUT.
#   scripts/gpu_checks.sh PHASE...   phases: env loopback oneproto oneprops (one GPU is enough; the one* phases run the
#                                    rank processes on GPU 0: ONE_RANKS of them, ONE_K picks tests) tests epilogues rest fuzz fuzzmax ab bench bench2 quick2 quick4 latency bandwidth gather layer demo tune
#                                    gathermid (the gather's modes where they cross; GATHER_LL_BYTES: flagged words up to that) gatherbig (quick preset)
#                                    rsmid (reduce_scatterv's flagged words against its plain push at 16-128 rows, flagged words up to RS_LL_BYTES)
#                                    gpacked (the gather's packed flagged words against plain and the all-reduce gather, mid preset)
#                                    tunegather (gather_ll;
#                                    TUNE_LL_ROWS: also those rows with GATHER_LL_BYTES) esweep (ESWEEP="block:warps ..." for ll at 1-8 rows, bench.layer decode;
#                                    ESWEEP_MODES="ll gather_ll": the gather's flagged words too; "shipped": the shipped entries)
#                                    hier (multi-node on one host: 2 x 1, 2 x 2 with 4 GPUs) nvshmem (the GPU tests on NVSHMEM) hierbench (2 x 2)
#                                    parts, eparts (bench/push_parts.py's and bench/epilogue_parts.py's stub variants, alternated;
#                                    eparts takes LAYER_ARGS as the layer phase does)
# bandwidth: BW_PRESET picks the bench preset (default bandwidth), BW_IMPLS the implementations
#   (default fused,fused_pull,nccl_rsv).
# ab: AB_PRESETS (default latency) with AB_IMPLS, AB_ROUNDS times (default 2), on an earlier commit's kernels, put in ab/base/kernels by
#   hand (git archive COMMIT kernels | tar x -C ab/base), and on this tree, alternating twice; the base runs this tree's bench
#   unless ab/base has its own, with ab/base/kernels as reduce_scatterv.
# Restores/saves the Triton cache ($OUT/triton-cache.tgz <-> .gpu-cache/) so later calls skip compiles.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG=/tmp/gpu-run; rm -rf $LOG; mkdir -p $LOG/results
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=/tmp/triton-cache
# nothing is installed on the lent machine: the folder kernels/ imports as reduce_scatterv through a link
mkdir -p /tmp/rsv-path /tmp/rsv-base && ln -sfn "$PWD/kernels" /tmp/rsv-path/reduce_scatterv
export PYTHONPATH="/tmp/rsv-path:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p $TRITON_CACHE_DIR
[ -f .gpu-cache/triton-cache.tar.xz ] && tar xJf .gpu-cache/triton-cache.tar.xz -C $TRITON_CACHE_DIR 2>/dev/null
NG=$(nvidia-smi -L | wc -l)
summary=()
run() {  # run NAME TIMEOUT CMD...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$LOG/$name.log" 2>&1; local rc=$?
  summary+=("$name rc=$rc $(( $(date +%s) - t0 ))s")
  printf '%s\n' "${summary[@]}" > $LOG/summary.txt
  tar czf "$OUT/run.tgz" -C $LOG .  # after every phase: a later time-out still brings this back
}
for phase in "$@"; do
  case $phase in
    env) run env 60 bash -c 'nvidia-smi; nvidia-smi topo -m; python3 -c "import torch,triton;print(torch.__version__,triton.__version__,torch.cuda.nccl.version())"' ;;
    loopback) run loopback ${LOOPBACK_LIMIT:-200} python3 -m pytest -q -rs tests/test_loopback_gpu.py tests/test_launch_args.py -p no:cacheprovider ;;
    # every rank on GPU 0 (tests/gpus.py: RSV_RANKS_ON_ONE_GPU, gloo between the ranks and as the reference; time slices, no NVLink)
    oneproto) run oneproto ${ONE_LIMIT:-420} env RSV_RANKS_ON_ONE_GPU=${ONE_RANKS:-2} python3 -m pytest -q -rA tests/test_reduce_scatterv_gpu.py tests/test_all_gatherv_gpu.py -k "${ONE_K:-not fuzz}" -p no:cacheprovider ;;
    oneprops) run oneprops ${ONE_LIMIT:-420} env RSV_RANKS_ON_ONE_GPU=${ONE_RANKS:-2} RSV_GPU_EXAMPLES=${RSV_GPU_EXAMPLES:-40} python3 -m pytest -q -rA tests/test_reduce_scatterv_gpu.py tests/test_all_gatherv_gpu.py tests/test_epilogues_gpu.py tests/test_custom_op_gpu.py tests/test_deepseek_block.py -k "${ONE_K:-fuzz or test_epilogues_gpu or test_custom_op_gpu or test_pro_block}" -p no:cacheprovider ;;
    tests) run tests ${TESTS_LIMIT:-420} python3 -m pytest -q -rs -x tests/test_reduce_scatterv_gpu.py tests/test_all_gatherv_gpu.py tests/test_custom_op_gpu.py tests/test_plugins_gpu.py tests/test_deepseek_block.py -k "${TESTS_K:-not fuzz and not demo_command and not test_block_matches}" -p no:cacheprovider ;;
    rest) run rest ${TESTS_LIMIT:-300} python3 -m pytest -q tests/test_reduce_scatterv_gpu.py tests/test_deepseek_block.py -k "(dispatched or back_to_back or bad_input or missing_rank or block) and not demo_command and not test_block_matches" -p no:cacheprovider ;;
    epilogues) run epilogues ${TESTS_LIMIT:-480} python3 -m pytest -q -x tests/test_epilogues_gpu.py -k "${TESTS_K:-not fuzz}" -p no:cacheprovider ;;
    fuzzmax) run fuzzmax ${FUZZ_LIMIT:-420} env RSV_GPU_EXAMPLES=${RSV_GPU_EXAMPLES:-100} python3 -m pytest -q -x tests/test_reduce_scatterv_gpu.py -k "fuzz and [$NG]" -p no:cacheprovider ;;
    fuzz) run fuzz ${FUZZ_LIMIT:-420} env RSV_GPU_EXAMPLES=${RSV_GPU_EXAMPLES:-100} python3 -m pytest -q -x tests/test_reduce_scatterv_gpu.py tests/test_all_gatherv_gpu.py -k fuzz -p no:cacheprovider ;;
    ab) [ -d ab/base/bench ] || cp -r bench ab/base/  # an older tree may bring its own (git archive COMMIT kernels bench)
        ln -sfn "$PWD/ab/base/kernels" /tmp/rsv-base/reduce_scatterv
        for i in $(seq 1 ${AB_ROUNDS:-2}); do
          for p in ${AB_PRESETS:-latency}; do
            run ab-base-$p$i 200 bash -c "cd ab/base && PYTHONPATH=/tmp/rsv-base:. torchrun --nproc-per-node $NG -m bench --preset $p --impls ${AB_IMPLS:-fused,fused_push,nccl_rsv} --no-plot --out $LOG/results/ab-base-$p$i"
            run ab-new-$p$i 200 torchrun --nproc-per-node $NG -m bench --preset $p --impls ${AB_IMPLS:-fused,fused_push,nccl_rsv} --no-plot --out "$LOG/results/ab-new-$p$i"
          done
        done ;;
    layer) run layer 300 torchrun --nproc-per-node $NG -m bench.layer --preset latency ${LAYER_ARGS:-} --out "$LOG/results" ;;
    gathermid) run gathermid ${GATHER_LIMIT:-120} torchrun --nproc-per-node $NG -m bench.gather --preset mid ${GATHER_LL_BYTES:+--ll-bytes $GATHER_LL_BYTES} --out "$LOG/results/gathermid" ;;
    rsmid) run rsmid ${MID_LIMIT:-150} torchrun --nproc-per-node $NG -m bench --preset mid --ll-bytes ${RS_LL_BYTES:-2097152} --impls fused,fused_push,nccl_rsv --no-plot --out "$LOG/results/rsmid" ;;
    gpacked) run gpacked ${GATHER_LIMIT:-150} torchrun --nproc-per-node $NG -m bench.gather --preset mid --impls fused,fused_packed,nccl_allreduce --out "$LOG/results/gpacked" ;;
    gatherbig) run gatherbig ${GATHER_LIMIT:-120} torchrun --nproc-per-node $NG -m bench.gather --preset quick --out "$LOG/results/gatherbig" ;;
    tunegather) run tunegather ${TUNE_LIMIT:-200} torchrun --nproc-per-node $NG -m bench.tune --verbose --hidden 7168 --modes gather_ll ${TUNE_ROWS:+--rows $TUNE_ROWS} --out "$LOG/results/tunegather"
        [ -n "${TUNE_LL_ROWS:-}" ] && run tunegather-ll ${TUNE_LIMIT:-200} torchrun --nproc-per-node $NG -m bench.tune --verbose --hidden 7168 --modes gather_ll --rows $TUNE_LL_ROWS --ll-bytes ${GATHER_LL_BYTES:-2097152} --out "$LOG/results/tunegather-ll" ;;
    esweep) for c in ${ESWEEP:-512:4 256:2 256:4 512:2 1024:4 512:8}; do  # the flagged-word configs at 1-8 rows, with and without the fused hc_post
              python3 -c "import json,sys; c=sys.argv[1]; b,w=(0,0) if c=='shipped' else map(int,c.split(':')); json.dump({'entries':{f'{m}/W$NG/bfloat16/H7168/b{k}':dict(block=b,num_warps=w,programs_per_sm=1,tiles_per_program=1,relay=True) for m in sys.argv[2:] for k in range(13,19) if b}},open('/tmp/esweep.json','w'))" $c ${ESWEEP_MODES:-ll}
              e=$(( ${e:-0} + 1 ))
              run esweep-${c/:/w}-$e ${ESWEEP_LIMIT:-60} env KERNELS_TUNE_FILE=/tmp/esweep.json torchrun --nproc-per-node $NG -m bench.layer --preset decode --out "$LOG/results/esweep-${c/:/w}-$e"
            done ;;
    gather) run gather 200 torchrun --nproc-per-node $NG -m bench.gather --preset ${GATHER_PRESET:-latency} --out "$LOG/results" ;;
    hier) run hier ${TESTS_LIMIT:-420} env RSV_GPU_EXAMPLES=${RSV_GPU_EXAMPLES:-30} python3 -m pytest -q tests/test_hierarchy_gpu.py -p no:cacheprovider ;;
    nvshmem) run nvshmem ${TESTS_LIMIT:-540} env KERNELS_SYMM_MEM_BACKEND=nvshmem RSV_GPU_EXAMPLES=${RSV_GPU_EXAMPLES:-30} python3 -m pytest -q -rs tests/test_reduce_scatterv_gpu.py tests/test_all_gatherv_gpu.py tests/test_hierarchy_gpu.py tests/test_epilogues_gpu.py tests/test_custom_op_gpu.py tests/test_plugins_gpu.py -k "${TESTS_K:-not fuzz_model}" -p no:cacheprovider ;;
    eparts) for v in ${EPARTS_VARIANTS:-base fuse_to_32 base fuse_to_32}; do  # bench/epilogue_parts.py, alternated
              k=$(( ${k:-0} + 1 ))
              run eparts-$v$k ${EPARTS_LIMIT:-90} env VARIANT=$v torchrun --nproc-per-node 2 bench/epilogue_parts.py --preset ${EPARTS_PRESET:-latency} ${LAYER_ARGS:-} --out "$LOG/results/eparts-$v$k"
            done ;;
    parts) for i in $(seq 1 ${PARTS_ROUNDS:-2}); do  # bench/push_parts.py: the protocol's parts by stubs, alternated
             for v in ${PARTS_VARIANTS:-base no_fault_poll no_begin_err no_digest no_uniform_max lean}; do
               run parts-$v$i 150 env VARIANT=$v torchrun --nproc-per-node 2 bench/push_parts.py
             done
           done ;;
    hierbench) run hierbench ${HIERBENCH_LIMIT:-300} torchrun --nproc-per-node 4 -m bench --preset ${HIER_PRESET:-quick} --impls ${HIER_IMPLS:-fused,nccl_rsv,hier2,hier2_fp32} --no-plot --out "$LOG/results/hier"
        run hiergather ${HIERGATHER_LIMIT:-200} torchrun --nproc-per-node 4 -m bench.gather --preset latency --impls fused,nccl_allgatherv,hier2 --out "$LOG/results/hier" ;;
    quick4) run quick4 240 torchrun --nproc-per-node 4 -m bench --preset quick --out "$LOG/results" ;;
    quick2) run quick2 200 torchrun --nproc-per-node 2 -m bench --preset quick --out "$LOG/results" ;;
    bench) run bench ${BENCH_LIMIT:-480} torchrun --nproc-per-node $NG -m bench --preset full --out "$LOG/results" ;;
    bench2) run bench2 ${BENCH_LIMIT:-300} torchrun --nproc-per-node 2 -m bench --preset full --out "$LOG/results" ;;
    bandwidth) run bandwidth 300 torchrun --nproc-per-node $NG -m bench --preset ${BW_PRESET:-bandwidth} --impls ${BW_IMPLS:-fused,fused_pull,nccl_rsv} --no-plot --out "$LOG/results/bandwidth" ;;
    demo) run demo 300 bash scripts/demo_gpu.sh ;;
    latency) lat=$(( ${lat:-0} + 1 ))  # each run in its own folder (e.g. before and after a tune)
        run latency$lat 150 torchrun --nproc-per-node $NG -m bench --preset latency --no-plot --out "$LOG/results/latency$lat" ;;
    tune) run tune ${TUNE_LIMIT:-400} torchrun --nproc-per-node $NG -m bench.tune --ship --verbose --modes ${TUNE_MODES:-ll,push,small,large} ${TUNE_ROWS:+--rows $TUNE_ROWS} --out "$LOG/results" ;;
  esac
done
[ "${SAVE_CACHE:-1}" = 1 ] && tar cJf "$OUT/triton-cache.tar.xz" -C $TRITON_CACHE_DIR . 2>/dev/null  # ~100 s
tar czf "$OUT/run.tgz" -C $LOG .
for f in $LOG/*.log; do echo "== $(basename $f): $(tail -c 1500 $f | tail -n 8)"; done
printf '%s\n' "${summary[@]}"
ls -la "$OUT"
