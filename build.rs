//! Compiles proto/raftwal.proto with protox (a pure-Rust protobuf compiler), so building raftwal
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/raftwal.proto");
    let descriptors = protox::compile(["proto/raftwal.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
