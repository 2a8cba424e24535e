// What the kernel allows for each write pattern (crates/tributary-storage/README.md, "Results
// (2026-11-26)"): pwrite of 256 MiB into a file in the current directory, sync before each
// run, median of N runs. Build and run: gcc -O2 -o /tmp/pwrite_patterns pwrite_patterns.c &&
// (cd /tmp && /tmp/pwrite_patterns 9). Not part of the build.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#define TOTAL (256L<<20)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static char src[4<<20];
double run(long size, long shift, long prealloc, long coalesce, int mode){
  sync();
  int fd=open("pwrite_patterns.tmp",O_RDWR|O_CREAT|O_TRUNC,0644);
  long pos=shift, alloc=0; if(shift) pwrite(fd,src,shift,0);
  static char buf[2<<20]; long bl=0, bstart=0;
  double t=now();
  while(pos<TOTAL){
    if(coalesce){ memcpy(buf+bl,src,size); bl+=size; pos+=size;
      if(bl>=coalesce){ long n=bl-bl%coalesce; pwrite(fd,buf,n,bstart); bstart+=n; memmove(buf,buf+n,bl-n); bl-=n; }
      continue; }
    if(prealloc && pos+size>alloc){ long from=alloc>pos?alloc:pos; fallocate(fd,mode,from,prealloc); alloc=from+prealloc; }
    pwrite(fd,src,size,pos); pos+=size;
  }
  double el=now()-t; close(fd); unlink("pwrite_patterns.tmp"); return pos/el/1e9;
}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  for(long i=0;i<sizeof src;i++) src[i]=i*7;
  // KEEP_SIZE preallocation leaves the file size at the data's end (every write still moves
  // it); mode 0 extends the size with the blocks, so a write inside it changes no size.
  struct {const char*n;long s,sh,p,c;int m;} cs[]={{"1M aligned",1<<20,0,0,0,0},{"117823 @8",117823,8,0,0,0},{"117823 @8 prealloc4M",117823,8,4<<20,0,FALLOC_FL_KEEP_SIZE},{"117823 coalesce 1M",117823,8,0,1<<20,0},{"1M aligned prealloc",1<<20,0,4<<20,0,FALLOC_FL_KEEP_SIZE},{"117823 @8 extend4M",117823,8,4<<20,0,0},{"1M aligned extend4M",1<<20,0,4<<20,0,0}};
  enum{C=sizeof cs/sizeof cs[0]};
  int N=atoi(argv[1]); double r[C][32];
  for(int i=0;i<N;i++) for(int c=0;c<C;c++) r[c][i]=run(cs[c].s,cs[c].sh,cs[c].p,cs[c].c,cs[c].m);
  for(int c=0;c<C;c++){ qsort(r[c],N,sizeof(double),cmp); printf("%-22s median %.2f GB/s  [%.2f..%.2f]\n",cs[c].n,r[c][N/2],r[c][0],r[c][N-1]); }
}
