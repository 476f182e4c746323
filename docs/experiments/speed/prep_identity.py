"""The field-of-view-first prepare/restore against the previous implementation: bit-identical outputs.

    git show 1b50c8c:lasegm/preprocess.py > /tmp/preprocess_old.py && python docs/experiments/speed/prep_identity.py
"""
import sys, importlib.util, itertools, os
import numpy as np, nibabel as nib
from pathlib import Path
spec = importlib.util.spec_from_file_location("preold", "/tmp/preprocess_old.py"); old = importlib.util.module_from_spec(spec); sys.modules["preold"]=old; spec.loader.exec_module(old)
from lasegm import preprocess as new
data = Path(os.environ.get("LASEGM_DATA", "../shared/data/Task02_Heart"))
img = nib.load(data/"imagesTr/la_003.nii.gz"); A = img.affine; X = np.asarray(img.dataobj, dtype=np.float32)
rng = np.random.default_rng(0)
cases = [(X, A)]
# reoriented copies: transposes and flips with consistent affines
for perm in [(1,0,2),(2,0,1),(0,2,1)]:
    for flip in [(), (0,), (1,2)]:
        ornt = np.array([[perm.index(i) if False else 0,1] for i in range(3)])
        Y = np.transpose(X, perm); Ap = A[:, list(perm)+[3]]
        for f in flip:
            Y = np.flip(Y, f); Ap = Ap.copy(); Ap[:3,3] += Ap[:3,f]*(Y.shape[f]-1); Ap[:3,f] *= -1
        cases.append((np.ascontiguousarray(Y), Ap))
# small and odd-size synthetic volumes; a fine one; a thin one
for shp, z in [((90,70,12),1.25), ((300,333,20),0.7), ((64,64,1),1.0), ((161,159,5),2.0)]:
    Aff = np.diag([z,z,1.5,1.0]); cases.append((rng.normal(size=shp).astype(np.float32)*100+50, Aff))
for kw in [dict(), dict(image_size=128), dict(image_size=224), dict(fov_mm=100.0), dict(fov_mm=500.0)]:
    for ver in [1, 2]:
        if ver == 1:
            k = dict(kw, version=1, normalization=new.RECIPES[1][0], resize=new.RECIPES[1][1]); k.setdefault("fov_mm", 0.0)
        else: k = kw
        pn, po = new.Preprocessing(**k), old.Preprocessing(**k)
        for im, aff in cases:
            im0 = im.copy()
            a, ga = pn.prepare(im, aff); b, gb = po.prepare(im, aff)
            assert np.array_equal(im, im0), "input modified"
            assert a.dtype == b.dtype and np.array_equal(a, b), (k, im.shape)
            p = rng.random(a.shape).astype(np.float32)
            ra, rb = pn.restore(p, ga), po.restore(p, gb)
            assert ra.shape == rb.shape and np.array_equal(ra, rb), ("restore", k, im.shape)
            assert ra.flags.c_contiguous
print("identical on", len(cases), "volumes x 10 recipes")
