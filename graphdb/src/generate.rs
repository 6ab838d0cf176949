pub fn placeholder_gen() {}
