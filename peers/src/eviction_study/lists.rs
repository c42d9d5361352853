//! Doubly linked lists of keys over one node arena, for the single-threaded
//! policies (LRU and W-TinyLFU's three segments). Head = most recent.

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    key: u32,
    list: u8,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

/// Up to `L` lists of keys; every key is in at most one list. Keys are
/// below the `universe` given at construction (direct-indexed, no hashing).
pub struct Lists<const L: usize> {
    nodes: Vec<Node>,
    node_of: Vec<u32>,
    free: Vec<u32>,
    ends: [Ends; L],
}

impl<const L: usize> Lists<L> {
    pub fn new(universe: usize) -> Self {
        Lists {
            nodes: Vec::new(),
            node_of: vec![NIL; universe],
            free: Vec::new(),
            ends: [Ends {
                head: NIL,
                tail: NIL,
                len: 0,
            }; L],
        }
    }

    /// The list `key` is in.
    pub fn list_of(&self, key: u32) -> Option<usize> {
        match self.node_of[key as usize] {
            NIL => None,
            node => Some(self.nodes[node as usize].list as usize),
        }
    }

    pub fn len(&self, list: usize) -> usize {
        self.ends[list].len
    }

    /// The least recent key of `list`.
    pub fn tail(&self, list: usize) -> Option<u32> {
        match self.ends[list].tail {
            NIL => None,
            node => Some(self.nodes[node as usize].key),
        }
    }

    /// Puts `key` at the head of `list`, moving it from wherever it was.
    pub fn push_head(&mut self, list: usize, key: u32) {
        let node = match self.node_of[key as usize] {
            NIL => {
                let node = self.free.pop().unwrap_or_else(|| {
                    self.nodes.push(Node {
                        key,
                        list: 0,
                        prev: NIL,
                        next: NIL,
                    });
                    (self.nodes.len() - 1) as u32
                });
                self.node_of[key as usize] = node;
                node
            }
            node => {
                self.unlink(node);
                node
            }
        };
        let old_head = self.ends[list].head;
        self.nodes[node as usize] = Node {
            key,
            list: list as u8,
            prev: NIL,
            next: old_head,
        };
        if old_head != NIL {
            self.nodes[old_head as usize].prev = node;
        } else {
            self.ends[list].tail = node;
        }
        self.ends[list].head = node;
        self.ends[list].len += 1;
    }

    /// Removes `key` from its list.
    pub fn remove(&mut self, key: u32) {
        let node = self.node_of[key as usize];
        if node != NIL {
            self.unlink(node);
            self.node_of[key as usize] = NIL;
            self.free.push(node);
        }
    }

    fn unlink(&mut self, node: u32) {
        let Node {
            list, prev, next, ..
        } = self.nodes[node as usize];
        let ends = &mut self.ends[list as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            ends.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            ends.tail = prev;
        }
        ends.len -= 1;
    }
}
