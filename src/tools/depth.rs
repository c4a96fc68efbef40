//! Depth maps for synthetic scenes: the scene renderer paints each object's depth into a buffer
//! as it paints its colors, and the tool turns the buffer into the grayscale image the expert shows
//! (near = bright, far = dark, the usual convention of monocular depth visualizations).

use image::{GrayImage, Luma};

/// Per-pixel depth in [0, 1] (0 = nearest), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthBuffer {
    pub width: u32,
    pub height: u32,
    pub depth: Vec<f32>,
}

impl DepthBuffer {
    /// A ground plane seen from above and in front: far at the top row, near at the bottom row.
    pub fn ground_plane(width: u32, height: u32, far: f32, near: f32) -> Self {
        let mut depth = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            let t = if height > 1 {
                y as f32 / (height - 1) as f32
            } else {
                0.0
            };
            depth.extend(std::iter::repeat_n(far + (near - far) * t, width as usize));
        }
        Self {
            width,
            height,
            depth,
        }
    }

    /// Sets the depth of one pixel (out-of-range pixels are ignored: shapes may cross the border).
    pub fn set(&mut self, x: i64, y: i64, d: f32) {
        if x >= 0 && y >= 0 && (x as u32) < self.width && (y as u32) < self.height {
            self.depth[y as usize * self.width as usize + x as usize] = d;
        }
    }

    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.depth[y as usize * self.width as usize + x as usize]
    }

    /// Grayscale rendering: depth 0 maps to 255, depth 1 to 0.
    pub fn to_image(&self) -> GrayImage {
        GrayImage::from_fn(self.width, self.height, |x, y| {
            Luma([((1.0 - self.get(x, y).clamp(0.0, 1.0)) * 255.0).round() as u8])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_and_objects_render_near_bright() {
        let mut d = DepthBuffer::ground_plane(4, 3, 1.0, 0.5);
        assert_eq!(d.get(0, 0), 1.0);
        assert_eq!(d.get(3, 2), 0.5);
        d.set(1, 1, 0.0);
        d.set(-1, 7, 0.0); // ignored
        let img = d.to_image();
        assert_eq!(img.get_pixel(0, 0).0[0], 0);
        assert_eq!(img.get_pixel(1, 1).0[0], 255);
        assert_eq!(img.get_pixel(0, 2).0[0], 128);
    }
}
