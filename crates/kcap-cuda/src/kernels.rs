//! The embedded kernel sources and their compilation by NVRTC.
//!
//! Each module is one `.cu` file of `kernels/`. Quoted includes of the
//! project's own headers (`#include "common.cuh"`) are expanded here, by
//! text, from the embedded copies, so NVRTC needs no file system access for
//! them; angle-bracket includes (`<cuda_fp16.h>`) are left to NVRTC, which
//! searches the folders of [`include_dirs`]. Compilation needs no GPU, only
//! libnvrtc.so.13 on the loader path: CI compiles every module for `sm_90`
//! this way (`tests/nvrtc.rs`).
//!
//! Compiled CUBINs are kept on disk ([`compile_cached`]) so that a process
//! after the first pays no NVRTC time (≈ 0.2 s for the crate's modules).

use crate::error::{Error, Result};
use std::path::PathBuf;

/// A kernel module: name (also the PTX program name) and source text.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub name: &'static str,
    pub src: &'static str,
}

/// Headers that `.cu` files include with quotes.
const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("topk.cuh", include_str!("../kernels/topk.cuh")),
];

pub const TOPK_F32: Module = Module {
    name: "topk_f32",
    src: include_str!("../kernels/topk_f32.cu"),
};
pub const TOPK_F16: Module = Module {
    name: "topk_f16",
    src: include_str!("../kernels/topk_f16.cu"),
};
pub const TOPK_U16: Module = Module {
    name: "topk_u16",
    src: include_str!("../kernels/topk_u16.cu"),
};
pub const ACCUMULATE_ROWS_F32: Module = Module {
    name: "accumulate_rows_f32",
    src: include_str!("../kernels/accumulate_rows_f32.cu"),
};
pub const RNG: Module = Module {
    name: "rng",
    src: include_str!("../kernels/rng.cu"),
};

pub const PROCEDURAL: Module = Module {
    name: "procedural",
    src: include_str!("../kernels/procedural.cu"),
};

pub const EXPLICIT: Module = Module {
    name: "explicit",
    src: include_str!("../kernels/explicit.cu"),
};

/// Every kernel module of the crate (CI compiles each of them).
pub const MODULES: &[Module] = &[
    TOPK_F32,
    TOPK_F16,
    TOPK_U16,
    ACCUMULATE_ROWS_F32,
    RNG,
    PROCEDURAL,
    EXPLICIT,
];

/// The source of `m` with the project's quoted includes expanded (each
/// header once, like `#pragma once`).
pub fn expanded_source(m: &Module) -> String {
    let mut out = String::with_capacity(m.src.len() * 2);
    let mut seen: Vec<&str> = Vec::new();
    expand_into(m.src, &mut out, &mut seen);
    out
}

fn expand_into<'a>(src: &'a str, out: &mut String, seen: &mut Vec<&'a str>) {
    for line in src.lines() {
        let t = line.trim_start();
        let quoted = t
            .strip_prefix("#include")
            .map(str::trim)
            .and_then(|r| r.strip_prefix('"')?.strip_suffix('"'));
        match quoted.and_then(|name| HEADERS.iter().find(|(h, _)| *h == name)) {
            Some((name, text)) => {
                if !seen.contains(name) {
                    seen.push(name);
                    out.push_str(&format!("// ---- begin {name} ----\n"));
                    expand_into(text, out, seen);
                    out.push_str(&format!("// ---- end {name} ----\n"));
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// Folders that hold the CUDA headers the kernels include (`cuda_fp16.h`),
/// in this order, each kept only if it has `cuda_fp16.h`:
/// `$KCAP_CUDA_INCLUDE`; `$CUDA_HOME/include`, `$CUDA_PATH/include`; for each
/// folder `d` of `$LD_LIBRARY_PATH`, `d/../include` (the layout of the pip
/// wheels `nvidia-cuda-runtime` / `nvidia-cuda-nvrtc`: `nvidia/cu13/{lib,include}`);
/// `/usr/local/cuda/include`.
pub fn include_dirs() -> Vec<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("KCAP_CUDA_INCLUDE") {
        cands.push(d.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            cands.push(PathBuf::from(d).join("include"));
        }
    }
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        for d in std::env::split_paths(&p) {
            if !d.as_os_str().is_empty() {
                cands.push(d.join("..").join("include"));
            }
        }
    }
    cands.push("/usr/local/cuda/include".into());
    let mut out: Vec<PathBuf> = Vec::new();
    for c in cands {
        if c.join("cuda_fp16.h").is_file() {
            let c = c.canonicalize().unwrap_or(c);
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// True when libnvrtc can be loaded (by name, through the loader path).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names and drops
    // the handle; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The output of [`compile`]: a CUBIN image for one architecture and
/// NVRTC's log (with ptxas --verbose: registers, shared memory, spills).
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// Compiles `m` to a CUBIN for `arch` (`"sm_90"`: NVRTC runs ptxas for that
/// exact target, so register and shared-memory limits are checked too).
/// Needs NVRTC only, no GPU: see [`nvrtc_available`].
pub fn compile(m: &Module, arch: &str) -> Result<Compiled> {
    use cudarc::nvrtc::{result, sys};
    use std::ffi::{CStr, CString};
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let includes = include_dirs();
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--ptxas-options=--verbose".into(),
    ];
    options.extend(
        includes
            .iter()
            .map(|p| format!("--include-path={}", p.display())),
    );
    let fail = |log: String| Error::Compile {
        module: m.name.to_string(),
        arch: arch.to_string(),
        includes: format!("{includes:?}"),
        log,
    };
    let src =
        CString::new(expanded_source(m)).map_err(|_| fail("source holds a NUL byte".into()))?;
    let name = CString::new(format!("{}.cu", m.name)).expect("module names hold no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| fail(format!("{e:?}")))?;
    // SAFETY: `prog` was created above from `src` and `name`, which outlive
    // it, and is destroyed exactly once, at the end of this block; the
    // buffers handed to NVRTC are sized by the matching *Size calls.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        let cubin = compiled.map_err(|e| format!("{e:?}")).and_then(|()| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| format!("{e:?}"))?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                .result()
                .map_err(|e| format!("{e:?}"))?;
            Ok(buf)
        });
        let _ = result::destroy_program(prog);
        match cubin {
            Ok(cubin) if !cubin.is_empty() => Ok(Compiled { cubin, log }),
            Ok(_) => Err(fail(format!("NVRTC returned an empty CUBIN\n{log}"))),
            Err(e) => Err(fail(format!("{e}\n{log}"))),
        }
    };
    out
}

/// NVRTC's version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints through valid pointers; the
    // library is present (checked above).
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::Compile {
            module: "-".into(),
            arch: "-".into(),
            includes: String::new(),
            log: format!("nvrtcVersion: {e:?}"),
        })?;
    Ok((major, minor))
}

/// The folder of the on-disk kernel cache: `$KCAP_KERNEL_CACHE` if set
/// (`off` or `0` turns the cache off), else `$XDG_CACHE_HOME/kcap/kernels`,
/// else `$HOME/.cache/kcap/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("KCAP_KERNEL_CACHE") {
        Some(v) if v == "off" || v == "0" || v.is_empty() => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kcap").join("kernels"))
}

/// The cache file for `m` on `arch`: named by a SHA-256 of everything the
/// CUBIN depends on — the expanded source, the target, NVRTC's version and
/// the text of every header NVRTC would find (`cuda_fp16.h` and friends are
/// hashed by their folder's listing of sizes and times).
fn cache_file(dir: &std::path::Path, m: &Module, arch: &str) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update([0]);
    h.update(arch);
    h.update([0]);
    h.update(format!("{:?}", nvrtc_version()?));
    h.update([0]);
    for d in include_dirs() {
        h.update(d.to_string_lossy().as_bytes());
        if let Ok(md) = std::fs::metadata(d.join("cuda_fp16.h")) {
            h.update(md.len().to_le_bytes());
            if let Ok(t) = md.modified() {
                h.update(format!("{t:?}"));
            }
        }
        h.update([0]);
    }
    h.update(expanded_source(m));
    let hex: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(dir.join(format!("{}-{arch}-{hex}.cubin", m.name)))
}

/// [`compile`] through the on-disk cache of [`cache_dir`]: a CUBIN already
/// there for the same source, target, NVRTC and headers is read instead of
/// compiled; a fresh one is written (temporary file, then rename, so a
/// concurrent reader never sees half a file). The cache is best effort: a
/// folder that cannot be written only costs the compilation. `Ok((cubin,
/// path))`, `path` set when the CUBIN came from the cache (so the caller
/// can drop a file the driver refuses, see [`forget_cached`]).
pub fn compile_cached(m: &Module, arch: &str) -> Result<(Vec<u8>, Option<PathBuf>)> {
    compile_cached_in(cache_dir().as_deref(), m, arch)
}

/// [`compile_cached`] with the cache folder given (`None`: no cache).
pub fn compile_cached_in(
    dir: Option<&std::path::Path>,
    m: &Module,
    arch: &str,
) -> Result<(Vec<u8>, Option<PathBuf>)> {
    let Some(dir) = dir else {
        return Ok((compile(m, arch)?.cubin, None));
    };
    let file = cache_file(dir, m, arch)?;
    if let Ok(bytes) = std::fs::read(&file) {
        if !bytes.is_empty() {
            return Ok((bytes, Some(file)));
        }
    }
    let c = compile(m, arch)?;
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = dir.join(format!(".{}.{}.tmp", m.name, std::process::id()));
        if std::fs::write(&tmp, &c.cubin).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((c.cubin, None))
}

/// Removes a cached CUBIN that the driver refused to load.
pub fn forget_cached(file: &std::path::Path) {
    let _ = std::fs::remove_file(file);
}
