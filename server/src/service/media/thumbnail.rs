//! Thumbnails: which of the spec's suggested sizes answers a request, and rendering one from an
//! image (PNG, JPEG, GIF or WebP, recognised by its bytes, never by the declared type), with
//! limits that keep a decompression bomb from taking the server's memory.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

use crate::service::{ServiceError, ServiceResult};

/// How a thumbnail fits the requested box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Exactly the box, cut from the middle of the image scaled to cover it.
    Crop,
    /// Within the box, keeping the aspect ratio; never larger than the original.
    Scale,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }

    /// A request's method (default: scale).
    pub fn from_request(m: Option<&ruma::media::Method>) -> ServiceResult<Self> {
        match m {
            None | Some(ruma::media::Method::Scale) => Ok(Self::Scale),
            Some(ruma::media::Method::Crop) => Ok(Self::Crop),
            Some(other) => Err(ServiceError::InvalidParam(format!("unknown thumbnail method {}", other.as_str()))),
        }
    }
}

/// A request's width or height.
pub fn dimension(n: ruma::UInt) -> ServiceResult<u32> {
    u32::try_from(n).map_err(|_| ServiceError::InvalidParam("thumbnail dimensions are too large".into()))
}

/// The sizes the spec suggests servers generate; requests are answered with one of them, so the
/// cache holds at most five thumbnails per media.
pub const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// The smallest generated size of the requested method that is at least as large as asked;
/// a crop larger than every crop size is answered by the fitting scale size, anything larger
/// than all by the largest.
pub fn choose(width: u32, height: u32, method: Method) -> (u32, u32, Method) {
    let fits = |&&(w, h, _): &&(u32, u32, Method)| w >= width && h >= height;
    SIZES
        .iter()
        .filter(|s| s.2 == method)
        .find(fits)
        .or_else(|| SIZES.iter().filter(|s| s.2 == Method::Scale).find(fits))
        .copied()
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThumbnailError {
    #[error("cannot generate thumbnails for this content")]
    NotAnImage,
    #[error("the image is too large to thumbnail")]
    TooLarge,
}

/// A rendered thumbnail.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Renders a thumbnail of `source` into a `width`×`height` box. CPU-bound: call it from a
/// blocking thread.
pub fn render(
    source: &[u8],
    width: u32,
    height: u32,
    method: Method,
    max_pixels: u64,
) -> Result<Rendered, ThumbnailError> {
    let reader = ImageReader::new(Cursor::new(source)).with_guessed_format().map_err(|_| ThumbnailError::NotAnImage)?;
    let format = reader.format().ok_or(ThumbnailError::NotAnImage)?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) {
        return Err(ThumbnailError::NotAnImage);
    }
    let (w, h) = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|_| ThumbnailError::NotAnImage)?
        .into_dimensions()
        .map_err(|_| ThumbnailError::NotAnImage)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ThumbnailError::TooLarge);
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ThumbnailError::TooLarge,
        _ => ThumbnailError::NotAnImage,
    })?;
    let thumb = match method {
        Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
        Method::Scale if w <= width && h <= height => image,
        Method::Scale => image.resize(width, height, FilterType::Triangle),
    };
    encode(thumb, format == ImageFormat::Jpeg)
}

/// JPEG for photographs (sources that were JPEG), PNG otherwise (keeps transparency).
fn encode(image: DynamicImage, as_jpeg: bool) -> Result<Rendered, ThumbnailError> {
    let mut bytes = Vec::new();
    if as_jpeg {
        image
            .into_rgb8()
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .map_err(|_| ThumbnailError::NotAnImage)?;
        Ok(Rendered { bytes, content_type: "image/jpeg" })
    } else {
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).map_err(|_| ThumbnailError::NotAnImage)?;
        Ok(Rendered { bytes, content_type: "image/png" })
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageFormat, Rgba, RgbaImage};

    use super::{Method, ThumbnailError, choose, render};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(w, h, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 0, 255]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        image::load_from_memory(bytes).map(|i| (i.width(), i.height())).unwrap()
    }

    #[test]
    fn the_smallest_fitting_size_is_chosen() {
        assert_eq!(choose(20, 20, Method::Crop), (32, 32, Method::Crop));
        assert_eq!(choose(33, 10, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(choose(200, 200, Method::Crop), (320, 240, Method::Scale));
        assert_eq!(choose(100, 100, Method::Scale), (320, 240, Method::Scale));
        assert_eq!(choose(700, 500, Method::Scale), (800, 600, Method::Scale));
        assert_eq!(choose(5000, 5000, Method::Scale), (800, 600, Method::Scale));
    }

    #[test]
    fn crop_fills_the_box_and_scale_keeps_the_aspect() {
        let source = png(400, 200);
        let crop = render(&source, 96, 96, Method::Crop, 1_000_000).unwrap();
        assert_eq!(crop.content_type, "image/png");
        assert_eq!(dimensions(&crop.bytes), (96, 96));
        let scale = render(&source, 320, 240, Method::Scale, 1_000_000).unwrap();
        assert_eq!(dimensions(&scale.bytes), (320, 160));
        // Never enlarged.
        let small = render(&png(50, 40), 320, 240, Method::Scale, 1_000_000).unwrap();
        assert_eq!(dimensions(&small.bytes), (50, 40));
    }

    #[test]
    fn non_images_and_oversized_images_are_refused() {
        assert_eq!(
            render(b"<html><script>1</script></html>", 32, 32, Method::Crop, 1000).unwrap_err(),
            ThumbnailError::NotAnImage
        );
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#;
        assert_eq!(render(svg, 32, 32, Method::Crop, 1000).unwrap_err(), ThumbnailError::NotAnImage);
        assert_eq!(render(&png(100, 100), 32, 32, Method::Crop, 9_999).unwrap_err(), ThumbnailError::TooLarge);
    }
}
