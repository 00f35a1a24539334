"""Format and process code without bpy: the bundle reader, npy/npz parsing, SH-to-lights
maths, the backend child process and its progress protocol, backend set-up, options.
Plain Python can import and test all of it."""
