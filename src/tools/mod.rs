//! Visual tools the experts used, implemented once: the importers render tool outputs with them,
//! the synthetic world builds trajectories with them, the tool-using baseline calls them.

pub mod crop;
pub mod depth;
pub mod highlight;
pub mod zoom;
