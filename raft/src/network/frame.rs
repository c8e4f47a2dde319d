//! Framing between nodes: a u32 big-endian length, then a postcard payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// The largest frame accepted. A bigger length prefix is a broken or hostile peer: the
/// connection is closed before anything is allocated for it.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: DeserializeOwned>(r: &mut (impl AsyncReadExt + Unpin)) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len.into()));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(postcard::from_bytes(&buf)?)
}

/// Encodes and writes one frame (flushed).
pub async fn write_frame<T: Serialize>(w: &mut (impl AsyncWriteExt + Unpin), msg: &T) -> Result<(), FrameError> {
    let payload = postcard::to_stdvec(msg)?;
    let len = u32::try_from(payload.len()).ok().filter(|l| *l <= MAX_FRAME);
    let Some(len) = len else {
        return Err(FrameError::TooLarge(payload.len() as u64));
    };
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&payload);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_length_is_rejected_before_allocating() {
        smol::block_on(async {
            let mut input = smol::io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
            let r = read_frame::<Vec<u8>>(&mut input).await;
            assert!(matches!(r, Err(FrameError::TooLarge(0xffff_ffff))), "{r:?}");
        })
    }

    #[test]
    fn frames_round_trip_and_garbage_is_malformed() {
        smol::block_on(async {
            let mut out = smol::io::Cursor::new(Vec::new());
            write_frame(&mut out, &(7u64, "seven".to_string())).await.unwrap();
            let mut input = smol::io::Cursor::new(out.into_inner());
            let v: (u64, String) = read_frame(&mut input).await.unwrap();
            assert_eq!(v, (7, "seven".to_string()));
            let mut garbage = smol::io::Cursor::new(vec![0, 0, 0, 2, 0xff, 0xff]);
            let r = read_frame::<(u64, String)>(&mut garbage).await;
            assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
        })
    }
}
