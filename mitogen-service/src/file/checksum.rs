//! The checksum both ends compute over the bytes of a transfer.

/// A fast 64-bit checksum of a byte stream (not cryptographic: the
/// transports already authenticate; this catches truncation and
/// corruption between the two files). Four independent lanes over 32-byte
/// blocks keep the multiplies from waiting on each other.
#[derive(Debug, Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    len: u64,
    pending: [u8; 32],
    npending: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            lanes: [
                0x9e37_79b9_7f4a_7c15,
                0xc2b2_ae3d_27d4_eb4f,
                0x1656_67b1_9e37_79f9,
                0x27d4_eb2f_1656_67c5,
            ],
            len: 0,
            pending: [0; 32],
            npending: 0,
        }
    }
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29)
}

impl Checksum {
    fn block(&mut self, b: &[u8]) {
        for (lane, w) in self.lanes.iter_mut().zip(b.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = mix(*lane, u64::from_le_bytes(word));
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (32 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.npending = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    /// Adds `len` zero bytes (a hole in a sparse file) without reading
    /// memory: the same result as `update` with that many zeros, at a few
    /// cycles per 32 bytes.
    pub fn zeros(&mut self, mut len: u64) {
        if self.npending > 0 {
            let take = ((32 - self.npending) as u64).min(len) as usize;
            self.pending[self.npending..self.npending + take].fill(0);
            self.npending += take;
            self.len += take as u64;
            len -= take as u64;
            if self.npending < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.npending = 0;
        }
        self.len += len;
        // mix(h, 0) on each lane, once per whole block.
        for _ in 0..len / 32 {
            for lane in &mut self.lanes {
                *lane = mix(*lane, 0);
            }
        }
        let rest = (len % 32) as usize;
        self.pending[..rest].fill(0);
        self.npending = rest;
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u64 {
        let mut last = [0u8; 32];
        last[..self.npending].copy_from_slice(&self.pending[..self.npending]);
        let mut c = self.clone();
        c.block(&last);
        let h = c
            .lanes
            .iter()
            .fold(c.len ^ (self.npending as u64), |h, l| mix(h, *l));
        mix(h, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::Checksum;

    #[test]
    fn zeros_match_update_with_zeros() {
        for (pre, n, post) in [
            (0, 0, 0),
            (0, 64, 0),
            (5, 100, 3),
            (31, 33, 1),
            (7, 4096, 40),
        ] {
            let data: Vec<u8> = (0..pre).map(|i| i as u8 + 1).collect();
            let tail: Vec<u8> = (0..post).map(|i| i as u8 + 9).collect();
            let mut a = Checksum::default();
            a.update(&data);
            a.update(&vec![0; n]);
            a.update(&tail);
            let mut b = Checksum::default();
            b.update(&data);
            b.zeros(n as u64);
            b.update(&tail);
            assert_eq!(a.finish(), b.finish(), "pre {pre} zeros {n} post {post}");
        }
    }
}
