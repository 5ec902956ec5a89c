# Session 4, final GPU call on the merged main: every GPU suite in parallel lanes (with the hybrid accuracy
# beside them), then MoE kl / gradient timings, AUTOQ_MOE_GEMM=tma against wgmma, on 12 layers of 30b-a3b.
. .carry/env.sh >/dev/null
mkdir -p ../shared/models && ln -sfn $PWD/.carry/qwen3-tiny ../shared/models/qwen3-tiny
for d in .carry/shared/data .carry/shared/design; do [ -e ../shared/${d#.carry/shared/} ] || ln -sfn $PWD/$d ../shared/${d#.carry/shared/}; done
export AUTOQ_TINY=$PWD/.carry/qwen3-tiny
L=/tmp/logs; mkdir -p $L
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s]"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
make -s -j16 autoq $(ls tests/test_*.c | sed 's#tests/#build/tests/#;s#\.c$##') >$L/build.log 2>&1 || { tail -30 $L/build.log; exit 1; }
echo "build $(el)"
cnt() { echo "$1: rc $2, $(grep -c ^PASS $L/$1.log) pass, $(grep -c ^FAIL $L/$1.log) fail, $(grep -c ^SKIP $L/$1.log) skip $(el)"; }
lane() { for t in "$@"; do case $t in *.sh) AQ=build/autoq timeout ${LT:-220} bash tests/$t >$L/${t%.sh}.log 2>&1; r=$?; cnt ${t%.sh} $r;; *) timeout ${LT:-240} build/tests/$t >$L/$t.log 2>&1; r=$?; cnt $t $r;; esac; done; }
export OMP_NUM_THREADS=2
( timeout 230 bash .carry/s5/s4hyb_acc.sh 220 > $L/hacc.txt 2>&1 ) &
i=0; for t in test_gpu_ops "test_gpu_kv.sh test_gpu_fp16.sh test_gpu_kl_merge.sh" "test_gpu_windows.sh test_gpu_moe.sh" test_gpu_hybrid.sh test_gpu_refine.sh test_gpu_stream.sh; do
  i=$((i+1)); lane $t > $L/lane$i.txt 2>&1 &
done
( AUTOQ_GPU_TEST_MERGE=1 lane test_gpu > $L/lane_g.txt 2>&1 ) &
wait
cat $L/lane*.txt; echo "tests $(el)"
grep -h "^FAIL" $L/*.log | cut -c1-300 | head -30
echo "== hybrid accuracy"; tail -12 $L/hacc.txt
M=/dev/shm/m30; ./build/autoq gen $M --preset 30b-a3b --layers 12 --seed 1 --ids $M.npy --num-samples 64 --seq-len 512 >$L/gen30.log 2>&1; echo "gen $(el)"
for k in wgmma tma; do
  for me in "kl --num-samples 16" "gradient --num-samples 64 --gpu-gemm bf16"; do
    n=${me%% *}_$k
    AUTOQ_MOE_GEMM=$k timeout 60 ./build/autoq score $M --data $M.npy --device cuda --method $me --json $L/$n.json >/dev/null 2>$L/$n.log
    echo "$n rc $?: $(grep -h 'tokens/s\|TFLOP/s\|peak GPU' $L/$n.log | sed 's/autoq: score: //' | tr '\n' ' ' | cut -c1-330)"
  done
done
python3 - $L <<'PY'
import json, sys
import numpy as np
L = sys.argv[1]
for m in ("kl", "gradient"):
    try:
        a, b = (np.array([g["score"] for g in json.load(open(f"{L}/{m}_{k}.json"))["groups"]]) for k in ("wgmma", "tma"))
        s = a >= 0.01 * a.max(); r = np.abs(b - a) / np.maximum(np.abs(a), 1e-30)
        print(f"{m}: tma against wgmma, worst relative difference {r[s].max():.3g} on {s.sum()} groups >= 1% of the largest")
    except Exception as e:
        print(m, "compare failed:", e)
PY
echo "== profiles"
for k in tma; do for me in "kl --num-samples 16" "gradient --num-samples 64 --gpu-gemm bf16"; do n=prof_${me%% *}_$k
  AUTOQ_GPU_PROFILE=1 AUTOQ_MOE_GEMM=$k timeout 60 ./build/autoq score $M --data $M.npy --device cuda --method $me >/dev/null 2>$L/$n.log; echo "$n rc $?"; done; done
rm -rf $M $M.npy
E=/dev/shm/m8; ./build/autoq gen $E --preset 8b --seed 1 --ids $E.npy --num-samples 128 --seq-len 512 >$L/gen8.log 2>&1; echo "gen 8b $(el)"
for g in bf16 bf16x2; do n=g8_$g; timeout 60 ./build/autoq score $E --data $E.npy --device cuda --method gradient --num-samples 128 --gpu-gemm $g >/dev/null 2>$L/$n.log; echo "$n rc $?: $(grep -h 'tokens/s\|TFLOP/s\|peak GPU' $L/$n.log | sed 's/autoq: score: //' | tr '\n' ' ' | cut -c1-330)"; done
AUTOQ_GPU_PROFILE=1 timeout 60 ./build/autoq score $E --data $E.npy --device cuda --method gradient --num-samples 32 --gpu-gemm bf16 >/dev/null 2>$L/prof_g8.log; echo "prof_g8 rc $? $(el)"
AUTOQ_GPU_PROFILE=1 timeout 60 ./build/autoq score $E --data $E.npy --device cuda --method kl --num-samples 8 >/dev/null 2>$L/prof_kl8.log; echo "prof_kl8 rc $? $(el)"
grep -A40 -i "gpu profile" $L/prof_g8.log | head -50
rm -f $L/*.json; tar czf $OUT/logs.tgz -C /tmp logs hacc 2>/dev/null; echo "end $(el)"
