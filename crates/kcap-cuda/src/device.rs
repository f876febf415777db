//! One CUDA device: context, stream, and a cache of compiled kernel modules.
//!
//! [`CudaDevice::new`] checks that the driver library can be loaded before
//! touching any CUDA function (cudarc panics when a dynamically loaded
//! library is missing), so a machine without a driver or a GPU gets
//! [`Error::NoDriver`] / [`Error::NoDevice`], never a panic.
//!
//! Each kernel module is compiled by NVRTC the first time one of its
//! functions is asked for, for the device's own compute capability (`sm_XY`)
//! (or read from the on-disk cache of [`kernels::compile_cached`]), loaded,
//! and kept for the life of the device: a second launch costs a hash lookup.

use crate::error::{DriverResultExt, Error, Result};
use crate::kernels::{self, Module};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A CUDA device with one stream. All work of this crate on the device is
/// issued on that stream, in order.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    cc: (i32, i32),
    sm_count: u32,
    smem_optin: u32,
    /// Cap on the device memory this crate plans to use (bytes; `u64::MAX`:
    /// none), from `KCAP_DEVICE_MEMORY_LIMIT` or [`CudaDevice::set_memory_limit`].
    memory_limit: AtomicU64,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaDevice({}: {}, sm_{}{})",
            self.ordinal, self.name, self.cc.0, self.cc.1
        )
    }
}

/// True when the NVIDIA driver library (libcuda.so) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names and drops
    // the handle; no CUDA function is called.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or the reason there are none.
pub fn device_count() -> Result<usize> {
    if !driver_available() {
        return Err(Error::NoDriver("libcuda.so could not be loaded".into()));
    }
    cudarc::driver::result::init().map_err(|e| Error::NoDevice {
        ordinal: 0,
        why: format!("cuInit failed: {e:?}"),
    })?;
    let n = CudaContext::device_count().what("cuDeviceGetCount")?;
    Ok(n.max(0) as usize)
}

/// `KCAP_DEVICE_MEMORY_LIMIT` in bytes, if set; a value that is not a whole
/// number of bytes is an error naming it, not silently ignored.
fn env_memory_limit() -> Result<Option<u64>> {
    match std::env::var("KCAP_DEVICE_MEMORY_LIMIT") {
        Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            Error::invalid(
                "KCAP_DEVICE_MEMORY_LIMIT",
                format!("{v:?} is not a number of bytes"),
            )
        }),
        Err(_) => Ok(None),
    }
}

impl CudaDevice {
    /// Opens device `ordinal` (0 = the first GPU). Errors, never panics, on a
    /// machine without an NVIDIA driver ([`Error::NoDriver`]) or without that
    /// device ([`Error::NoDevice`]).
    pub fn new(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice {
                ordinal,
                why: format!("the driver reports {count} device(s)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoDevice {
            ordinal,
            why: format!("context creation failed: {e:?}"),
        })?;
        // SAFETY: this crate issues all work on the one stream below, so the
        // cross-stream tracking that event tracking provides is not needed
        // (it would add two events per allocation and per launch).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let name = ctx.name().what("cuDeviceGetName")?;
        let cc = ctx.compute_capability().what("compute capability")?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .what("multiprocessor count")? as u32;
        let smem_optin = ctx
            .attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .what("shared memory per block")? as u32;
        Ok(Arc::new(CudaDevice {
            ctx,
            stream,
            ordinal,
            name,
            cc,
            sm_count,
            smem_optin,
            memory_limit: AtomicU64::new(env_memory_limit()?.unwrap_or(u64::MAX)),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }))
    }

    /// The device's name as the driver reports it ("NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Compute capability (major, minor): (9, 0) on Hopper.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The NVRTC target for this device, e.g. `"sm_90"`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.cc.0, self.cc.1)
    }

    /// Number of streaming multiprocessors (132 on an H100 SXM).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// The most shared memory one thread block may use (opt-in; 227 KiB on
    /// an H100).
    pub fn max_shared_per_block(&self) -> u32 {
        self.smem_optin
    }

    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    pub fn driver_version(&self) -> Result<(i32, i32)> {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer;
        // the driver library is loaded (checked in `new`).
        unsafe { sys::cuDriverGetVersion(&mut v) }
            .result()
            .what("cuDriverGetVersion")?;
        Ok((v / 1000, (v % 1000) / 10))
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().what("cuMemGetInfo")
    }

    /// Caps the device memory the memory guards let this crate plan for
    /// (`None`: only what the driver reports free). The environment variable
    /// `KCAP_DEVICE_MEMORY_LIMIT` (bytes) sets it when the device is opened.
    pub fn set_memory_limit(&self, bytes: Option<u64>) {
        self.memory_limit
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The cap set by [`CudaDevice::set_memory_limit`], if any.
    pub fn memory_limit(&self) -> Option<u64> {
        match self.memory_limit.load(Ordering::Relaxed) {
            u64::MAX => None,
            b => Some(b),
        }
    }

    /// Device memory a new allocation may use: what the driver reports free,
    /// lowered to the memory limit when one is set. Memory guards compare
    /// their estimates with this before allocating.
    pub fn available_memory(&self) -> Result<u64> {
        let (free, _) = self.mem_info()?;
        Ok((free as u64).min(self.memory_limit.load(Ordering::Relaxed)))
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream all of this crate's work goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all work issued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().what("stream synchronize")
    }

    /// Function `name` of module `m`, compiling and loading the module on
    /// first use.
    pub fn function(&self, m: &Module, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self
            .functions
            .lock()
            .expect("function cache poisoned")
            .get(&(m.name, name))
        {
            return Ok(f.clone());
        }
        let module = self.module(m)?;
        let f = module
            .load_function(name)
            .what(&format!("loading kernel {name} of module {}", m.name))?;
        self.functions
            .lock()
            .expect("function cache poisoned")
            .insert((m.name, name), f.clone());
        Ok(f)
    }

    /// Module `m`, compiled for this device and loaded (once per device).
    pub fn module(&self, m: &Module) -> Result<Arc<CudaModule>> {
        let mut cache = self.modules.lock().expect("module cache poisoned");
        if let Some(md) = cache.get(m.name) {
            return Ok(md.clone());
        }
        let arch = self.arch();
        let load = |cubin: Vec<u8>| self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin));
        let (cubin, cached) = kernels::compile_cached(m, &arch)?;
        let md = match (load(cubin), cached) {
            (Ok(md), _) => md,
            // A cached file the driver refuses (damaged): drop it, compile.
            (Err(_), Some(file)) => {
                kernels::forget_cached(&file);
                load(kernels::compile(m, &arch)?.cubin)
                    .what(&format!("loading module {} for {arch}", m.name))?
            }
            (Err(e), None) => return Err(e).what(&format!("loading module {} for {arch}", m.name)),
        };
        cache.insert(m.name, md.clone());
        Ok(md)
    }

    /// Compiles and loads every module now (so that later timings exclude
    /// compilation).
    pub fn warm_up(&self) -> Result<()> {
        for m in kernels::MODULES {
            self.module(m)?;
        }
        Ok(())
    }
}
