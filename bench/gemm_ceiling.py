"""The ceiling for a Qwen3-8B-shaped pass: cuBLAS (through PyTorch) on the pass's GEMM shapes alone,
2048 tokens (4 windows of 512), 36 layers of q, k, v, o, gate, up, down plus lm_head, bf16.
usage (GPU machine): python3 bench/gemm_ceiling.py"""
import torch, time
M=2048; D=4096; I=12288; V=151936
dev='cuda'
x=torch.randn(M,D,device=dev,dtype=torch.bfloat16)
xi=torch.randn(M,I,device=dev,dtype=torch.bfloat16)
W=[torch.randn(n,k,device=dev,dtype=torch.bfloat16)*0.02 for n,k in [(4096,D),(1024,D),(1024,D),(D,4096),(I,D),(I,D),(D,I)]]
lm=torch.randn(V,D,device=dev,dtype=torch.bfloat16)*0.02
def one(outdt):
    for l in range(36):
        for j,w in enumerate(W):
            inp = xi if j==6 else x
            torch.matmul(inp, w.t(), out_dtype=outdt) if outdt is not None else inp@w.t()
    torch.matmul(x, lm.t(), out_dtype=outdt) if outdt is not None else x@lm.t()
for name,dt in [("bf16 out",None)]:
    try:
        one(dt); torch.cuda.synchronize()
        t=time.time()
        for _ in range(10): one(dt)
        torch.cuda.synchronize()
        dtm=(time.time()-t)/10
        fl=2*M*(36*sum(w.numel() for w in W)+lm.numel())
        print(f"GEMM-only pass M=2048 {name}: {dtm*1e3:.1f} ms, {fl/dtm/1e12:.0f} TFLOP/s")
    except Exception as e: print(name, "failed", e)
