//! [`Cuda`]: the [`kcap::backend::Backend`] of the GPU.
//!
//! **For now every call uploads its inputs and downloads its result**: the
//! lazy engine keeps its synapses on the host, so `accumulate_rows` packs the
//! firing rows into a CSR, uploads it with the inputs, sums on the device and
//! copies the inputs back; `top_k` uploads the values and copies k ids back.
//! The transfers dominate on small steps, so this backend is a correctness
//! and plumbing step; engines that keep their state on the device follow.
//!
//! Agreement with the CPU backend: `top_k` returns exactly the same ids (the
//! same tie rule: lowest index). `accumulate_rows` sums in fixed point (see
//! [`crate::ops::accumulate`] for the tolerance against the CPU's f32 sums);
//! a call whose weights are not finite or whose sums could exceed the
//! fixed-point range is summed by the CPU backend instead.
//!
//! The trait's methods cannot return errors: a device failure in the middle
//! of a run (lost device, out of memory) panics with the driver's message.
//! Creating the backend ([`Cuda::new`]) is where a missing driver or device is
//! reported, as an error.

use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Result};
use crate::ops::accumulate::{self, DeviceCsr};
use crate::ops::explicit::{self, ExplicitFiber};
use crate::ops::procedural::{self, ProcOptions, ProcWorkspace};
use crate::ops::topk::{self, TopkWorkspace};
use kcap::backend::{Backend, Syn};
use kcap::engine::explicit::{DeviceFiber, FiberParts, GenSpec, PackedFiber};
use kcap::engine::procedural::{ProceduralState, Selection, View};
use kcap::engine::TargetPlan;
use kcap::format::weights::Update;
use kcap::format::FiberFormat;
use std::sync::{Arc, Mutex};

/// The CUDA backend on one device.
pub struct Cuda {
    dev: Arc<CudaDevice>,
    topk_ws: Mutex<Option<TopkWorkspace>>,
    proc_ws: Mutex<Option<ProcWorkspace>>,
    proc_opts: ProcOptions,
    /// `top_k` calls over fewer values than this run on the host
    /// ([`DEFAULT_TOPK_OFFLOAD_MIN`]); `accumulate_rows` runs on the host
    /// unless [`Cuda::set_offload_min`] forces the GPU.
    topk_min: usize,
    accumulate_min: usize,
}

/// `top_k` over at least this many values goes to the GPU: from ~2²² values
/// the upload plus the radix select beats the host's selection.
pub const DEFAULT_TOPK_OFFLOAD_MIN: usize = 1 << 22;
// Why `accumulate_rows` stays on the host by default: the lazy engine keeps
// its synapses in host memory, so the GPU would have to receive every firing
// row each step — 21.7 M synapses (174 MB) per step at lazy-1e9, 170 ms over
// PCIe against ~20 ms summed by 16 host cores (BENCHMARKS.md, H100 machine).

impl Cuda {
    /// The backend on device `ordinal`; compiles its kernels now, so that a
    /// missing NVRTC or a kernel that does not compile is reported here.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        let dev = CudaDevice::new(ordinal)?;
        Cuda::on(dev)
    }

    /// The backend on an already opened device.
    pub fn on(dev: Arc<CudaDevice>) -> Result<Cuda> {
        dev.module(&crate::kernels::TOPK_F32)?;
        dev.module(&crate::kernels::ACCUMULATE_ROWS_F32)?;
        dev.module(&crate::kernels::PROCEDURAL)?;
        dev.module(&crate::kernels::TOPK_U16)?;
        Ok(Cuda {
            dev,
            topk_ws: Mutex::new(None),
            proc_ws: Mutex::new(None),
            proc_opts: ProcOptions::default(),
            topk_min: DEFAULT_TOPK_OFFLOAD_MIN,
            accumulate_min: usize::MAX,
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Sends every `accumulate_rows` and `top_k` call of at least
    /// `elements` synapses or values to the GPU (0: all of them; tests use
    /// this). Results equal the host's up to the fixed-point tolerance of
    /// [`crate::ops::accumulate`].
    pub fn set_offload_min(&mut self, elements: usize) {
        self.topk_min = elements;
        self.accumulate_min = elements;
    }

    /// `accumulate_rows` with errors returned instead of panicking.
    pub fn try_accumulate_rows(
        &self,
        rows: &[Vec<Syn>],
        firing: &[u32],
        inputs: &mut [f32],
    ) -> Result<()> {
        if firing.is_empty() || inputs.is_empty() {
            return Ok(());
        }
        // Pack the firing rows into a CSR of firing.len() rows.
        let total: usize = firing.iter().map(|&i| rows[i as usize].len()).sum();
        let mut row_ptr = Vec::with_capacity(firing.len() + 1);
        let mut to = Vec::with_capacity(total.max(1));
        let mut w = Vec::with_capacity(total.max(1));
        let mut bound = 0f64;
        row_ptr.push(0u64);
        for &i in firing {
            for s in &rows[i as usize] {
                assert!(
                    (s.to as usize) < inputs.len(),
                    "synapse target {} out of range {}",
                    s.to,
                    inputs.len()
                );
                to.push(s.to);
                w.push(s.w);
                bound += (s.w as f64).abs();
            }
            row_ptr.push(to.len() as u64);
        }
        let scale = match accumulate::scale_bits(bound) {
            Some(s) if total > 0 && inputs.len() <= u32::MAX as usize => s,
            _ => {
                kcap::backend::cpu::Cpu.accumulate_rows(rows, firing, inputs);
                return Ok(());
            }
        };
        let s = self.dev.stream();
        let csr = DeviceCsr {
            row_ptr: s.clone_htod(&row_ptr).what("upload row_ptr")?,
            to: s.clone_htod(&to).what("upload targets")?,
            w: s.clone_htod(&w).what("upload weights")?,
        };
        let rows_idx: Vec<u32> = (0..firing.len() as u32).collect();
        let firing_d = s.clone_htod(&rows_idx).what("upload firing")?;
        let mut inputs_d = s.clone_htod(inputs).what("upload inputs")?;
        let mut acc = s
            .alloc_zeros::<u64>(inputs.len())
            .what("alloc accumulator")?;
        accumulate::accumulate_rows_f32(
            &self.dev,
            &csr,
            &firing_d,
            scale,
            &mut acc,
            &mut inputs_d,
        )?;
        s.memcpy_dtoh(&inputs_d, inputs).what("download inputs")?;
        s.synchronize().what("synchronize")?;
        Ok(())
    }

    /// `top_k` with errors returned instead of panicking.
    pub fn try_top_k(&self, values: &[f32], k: usize) -> Result<Vec<u32>> {
        let n = values.len();
        if k >= n {
            return Ok((0..n as u32).collect());
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let v = self.dev.stream().clone_htod(values).what("upload values")?;
        self.top_k_device(&v, k)
    }

    /// The k-cap of a device vector (`1 <= k < len`), ids increasing.
    fn top_k_device(&self, v: &cudarc::driver::CudaSlice<f32>, k: usize) -> Result<Vec<u32>> {
        let mut guard = self.topk_ws.lock().expect("top-k workspace poisoned");
        if guard.is_none() {
            *guard = Some(TopkWorkspace::new(&self.dev)?);
        }
        let ws = guard.as_mut().expect("just set");
        topk::topk(&self.dev, ws, v, k)?;
        Ok(ws.fetch_sorted(&self.dev)?.ids)
    }
}

impl Cuda {
    /// The selection of a procedural target on the device, exactly the
    /// CPU engine's ([`ProceduralState::select`]), with the synapses onto
    /// the winners found on the device. `Ok(None)` when the step does not
    /// fit the device kernels (more than [`procedural::MAX_SLOTS`] firing
    /// rows or [`procedural::MAX_FIBERS`] fibers): the CPU engine runs it.
    pub fn try_procedural_select(
        &self,
        state: &ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> kcap::Result<Option<Selection>> {
        let Some((step, mut guard)) = self.proc_step(state, view, plan, firing)? else {
            return Ok(None);
        };
        let ws = guard.as_mut().expect("workspace set");
        // The corrections are computed on the host while the device counts.
        let out = procedural::select_deferred(&self.dev, ws, &step, &self.proc_opts, |c| {
            state
                .device_corrections_into(view, plan, firing, c)
                .map_err(|e| e.to_string())
        })?;
        out.into_selection(&step).map(Some)
    }

    /// The procedural workspace, created on first use.
    fn proc_workspace(&self) -> Result<ProcWorkspaceGuard<'_>> {
        let mut guard = self.proc_ws.lock().expect("procedural workspace poisoned");
        if guard.is_none() {
            *guard = Some(ProcWorkspace::new(&self.dev)?);
        }
        Ok(guard)
    }

    /// The device's step for a procedural target (its rows' keys, no
    /// corrections yet) and the procedural workspace (created if needed),
    /// or `None` where the step does not fit the device kernels.
    fn proc_step(
        &self,
        state: &ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> kcap::Result<
        Option<(
            kcap::engine::procedural::device::DeviceStep,
            ProcWorkspaceGuard<'_>,
        )>,
    > {
        let step = state.device_step_rows(view, plan, firing)?;
        procedural::trace_point("device step rows");
        if step.slots() > procedural::MAX_SLOTS || step.fibers.len() > procedural::MAX_FIBERS {
            return Ok(None);
        }
        Ok(Some((step, self.proc_workspace()?)))
    }

    /// The selection with its Hebbian update applied: the stimuli's
    /// synapses (found first, from their resume marks) are applied while
    /// the device still searches the area's own (see
    /// `ops::procedural::select_deferred_split`), then the rest.
    pub fn try_procedural_select_learn(
        &self,
        state: &mut ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> kcap::Result<Option<Selection>> {
        let Some((step, mut guard)) = self.proc_step(state, view, plan, firing)? else {
            return Ok(None);
        };
        let ws = guard.as_mut().expect("workspace set");
        let state = std::cell::RefCell::new(state);
        let mut first = |w: &[u64], x: &[f32], syn: Vec<(u64, u32)>| {
            let sel = ProceduralState::device_selection(&step, w.to_vec(), x.to_vec(), 0, 0, syn)
                .map_err(|e| e.to_string())?;
            procedural::trace_point("first synapses fetched");
            let r = state
                .borrow_mut()
                .hebbian_selected(view, plan, firing, &sel)
                .map(|_| ())
                .map_err(|e| e.to_string());
            procedural::trace_point("first Hebbian update");
            r
        };
        let out = procedural::select_deferred_split(
            &self.dev,
            ws,
            &step,
            &self.proc_opts,
            |c| {
                state
                    .borrow()
                    .device_corrections_into(view, plan, firing, c)
                    .map_err(|e| e.to_string())
            },
            &mut first,
        )?;
        let mut sel = out.into_selection(&step)?;
        procedural::trace_point("selection");
        state
            .borrow_mut()
            .hebbian_selected(view, plan, firing, &sel)?;
        procedural::trace_point("second Hebbian update");
        sel.take_synapses();
        Ok(Some(sel))
    }
}

type ProcWorkspaceGuard<'a> = std::sync::MutexGuard<'a, Option<ProcWorkspace>>;

/// An explicit fiber in a [`Cuda`] backend's device memory (see
/// [`crate::ops::explicit`]): what `PackedFiber` holds while the GPU keeps it.
#[derive(Debug)]
pub struct CudaFiber {
    inner: Mutex<ExplicitFiber>,
}

impl CudaFiber {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExplicitFiber> {
        self.inner.lock().expect("explicit fiber poisoned")
    }
}

impl CudaFiber {
    /// `inputs += the rows of firing` (with their side entries) on the
    /// device, into the device buffer `inputs`.
    fn accumulate_on(
        &self,
        firing: &[u32],
        side: Option<&[u64]>,
        inputs: &mut cudarc::driver::CudaSlice<f32>,
    ) -> Result<()> {
        if firing.is_empty() {
            return Ok(());
        }
        let f = self.lock();
        let s = f.device().stream().clone();
        let fd = s.clone_htod(firing).what("upload firing ids")?;
        let sd = side
            .map(|v| s.clone_htod(v).what("upload side entries"))
            .transpose()?;
        f.accumulate(&fd, firing.len(), sd.as_ref(), inputs)
    }
}

impl DeviceFiber for CudaFiber {
    fn accumulate(
        &self,
        firing: &[u32],
        side: Option<&[u64]>,
        inputs: &mut [f32],
    ) -> kcap::Result<()> {
        if firing.is_empty() {
            return Ok(());
        }
        let s = self.lock().device().stream().clone();
        let mut d = s.clone_htod(inputs).what("upload inputs")?;
        self.accumulate_on(firing, side, &mut d)?;
        s.memcpy_dtoh(&d, inputs).what("download inputs")?;
        s.synchronize().what("synchronize")?;
        Ok(())
    }

    fn hits(&self, firing: &[u32], is_winner: &[u64]) -> kcap::Result<Vec<u64>> {
        if firing.is_empty() || is_winner.is_empty() {
            return Ok(Vec::new());
        }
        let mut f = self.lock();
        let s = f.device().stream().clone();
        let fd = s.clone_htod(firing).what("upload firing ids")?;
        let wd = s.clone_htod(is_winner).what("upload winner bits")?;
        Ok(f.hits(&fd, firing.len(), &wd)?)
    }

    fn hebbian(
        &self,
        firing: &[u32],
        is_winner: &[u64],
        u: Update,
        stochastic: bool,
        sr_key: u64,
    ) -> kcap::Result<()> {
        if firing.is_empty() || is_winner.is_empty() {
            return Ok(());
        }
        let mut f = self.lock();
        let s = f.device().stream().clone();
        let fd = s.clone_htod(firing).what("upload firing ids")?;
        let wd = s.clone_htod(is_winner).what("upload winner bits")?;
        f.hebbian(&fd, firing.len(), &wd, u.mult, u.cap, stochastic, sr_key)?;
        Ok(())
    }

    fn download(&self) -> kcap::Result<FiberParts> {
        Ok(self.lock().download()?)
    }

    fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Cuda {
    /// `fiber`'s device storage when it is on this backend's device.
    fn own<'a>(&self, fiber: &'a dyn DeviceFiber) -> Option<&'a CudaFiber> {
        let c = fiber.as_any().downcast_ref::<CudaFiber>()?;
        Arc::ptr_eq(c.lock().device(), &self.dev).then_some(c)
    }

    /// [`Backend::explicit_select`] with the fibers already resolved: one
    /// upload of the inputs, the rows of each fiber added on the device in
    /// the engine's order, the k-cap on the device, k ids back.
    fn explicit_select_on(
        &self,
        sources: &[(&CudaFiber, &[u32], Option<Vec<u64>>)],
        inputs: &[f32],
        k: usize,
    ) -> kcap::Result<Vec<u32>> {
        let s = self.dev.stream();
        let mut d = s.clone_htod(inputs).what("upload inputs")?;
        for (f, firing, side) in sources {
            f.accumulate_on(firing, side.as_deref(), &mut d)?;
        }
        if k >= inputs.len() {
            return Ok((0..inputs.len() as u32).collect());
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        Ok(self.top_k_device(&d, k)?)
    }
}

impl Backend for Cuda {
    fn explicit_supports(&self, format: &FiberFormat) -> bool {
        explicit::supports(format)
    }

    fn explicit_generate(&self, spec: &GenSpec) -> kcap::Result<Arc<dyn DeviceFiber>> {
        let f = ExplicitFiber::generate(&self.dev, spec)?;
        Ok(Arc::new(CudaFiber {
            inner: Mutex::new(f),
        }))
    }

    fn explicit_upload(
        &self,
        fiber: &PackedFiber,
        parts: &FiberParts,
    ) -> kcap::Result<Arc<dyn DeviceFiber>> {
        let f = ExplicitFiber::upload(
            &self.dev,
            fiber.format,
            fiber.n_src,
            fiber.n_tgt,
            fiber.log_code(),
            parts,
        )?;
        Ok(Arc::new(CudaFiber {
            inner: Mutex::new(f),
        }))
    }

    fn explicit_owns(&self, fiber: &dyn DeviceFiber) -> bool {
        self.own(fiber).is_some()
    }

    fn explicit_select(
        &self,
        sources: &[(&PackedFiber, &[u32])],
        inputs: &[f32],
        k: usize,
    ) -> Option<kcap::Result<Vec<u32>>> {
        let own: Option<Vec<(&CudaFiber, &[u32], Option<Vec<u64>>)>> = sources
            .iter()
            .map(|(pf, firing)| {
                let f = self.own(pf.device()?.as_ref())?;
                Some((f, *firing, pf.side_rows(firing)))
            })
            .collect();
        Some(self.explicit_select_on(&own?, inputs, k))
    }

    fn procedural_select(
        &self,
        state: &ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Option<kcap::Result<Selection>> {
        self.try_procedural_select(state, view, plan, firing)
            .transpose()
    }

    fn procedural_select_learn(
        &self,
        state: &mut ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Option<kcap::Result<Selection>> {
        self.try_procedural_select_learn(state, view, plan, firing)
            .transpose()
    }

    fn procedural_prepare(&self, model: &kcap::model::Model, target: usize) {
        // The dense counts (and the stimuli's resume marks) of the first
        // procedural area that fits, reserved while the brain is built.
        let area = &model.areas[target];
        let stim_rows: u64 = (0..model.stimuli.len())
            .filter(|&s| model.p(kcap::Source::Stim(s), target) > 0.0)
            .map(|s| model.stimuli[s].size as u64)
            .sum();
        // Best effort: the first step reserves again what is missing.
        if let Ok(mut guard) = self.proc_workspace() {
            let ws = guard.as_mut().expect("workspace set");
            let _ = procedural::reserve(&self.dev, ws, area.n, area.k, stim_rows, &self.proc_opts);
        }
    }

    fn name(&self) -> String {
        format!("cuda:{}", self.dev.ordinal())
    }

    fn accumulate_rows(&self, rows: &[Vec<Syn>], firing: &[u32], inputs: &mut [f32]) {
        let total: usize = firing.iter().map(|&i| rows[i as usize].len()).sum();
        if total < self.accumulate_min {
            return kcap::backend::cpu::Cpu.accumulate_rows(rows, firing, inputs);
        }
        if let Err(e) = self.try_accumulate_rows(rows, firing, inputs) {
            panic!("CUDA backend: accumulate_rows failed: {e}");
        }
    }

    fn top_k(&self, values: &[f32], k: usize) -> Vec<u32> {
        if values.len() < self.topk_min {
            return kcap::cap::top_k(values, k);
        }
        match self.try_top_k(values, k) {
            Ok(ids) => ids,
            Err(e) => panic!("CUDA backend: top_k failed: {e}"),
        }
    }
}
