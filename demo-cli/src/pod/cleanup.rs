//! The last step of the pod tour, always run: remove whatever the tour left (a pod named
//! `shim-demo-pod` and its containers, the images it imported).

use anyhow::Result;

use super::{PodTour, POD_NAME};

pub async fn run(tour: &mut PodTour, number: usize) -> Result<()> {
    tour.ui.heading(number, number, "Clean up");
    let result = async {
        let mut done = Vec::new();
        if let Ok(cri) = tour.cri() {
            for pod_id in cri.pods_named(POD_NAME).await? {
                for id in cri.containers_of(&pod_id).await? {
                    let _ = cri.stop_container(&id, 0).await;
                    cri.remove_container(&id).await?;
                    done.push(format!("removed container {id}"));
                }
                cri.stop_pod(&pod_id).await?;
                cri.remove_pod(&pod_id).await?;
                done.push(format!("removed pod {pod_id}"));
            }
        }
        for image in std::mem::take(&mut tour.imported) {
            crate::image::remove(tour.api()?, &image).await?;
            done.push(format!("removed image {image}"));
        }
        if done.is_empty() {
            done.push("nothing left to remove".to_string());
        }
        for line in &done {
            tour.ui.ok(line);
        }
        anyhow::Ok(done)
    }
    .await;
    crate::steps::report_cleanup(tour.ui, &result);
    result.map(|_| ())
}
